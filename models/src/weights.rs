//! Reading tensors from a safetensors file through a read-only memory map.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use aihal_core::{CoreError, Result};
use safetensors::{Dtype, SafeTensors};

/// An I/O error that names the file it happened on (`std::io::Error` alone does not).
pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> CoreError {
    CoreError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A safetensors file mapped read-only.
pub(crate) struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `path`.
    ///
    /// Errors: `Io` naming the file when it cannot be opened or mapped, `InvalidInput` for an
    /// empty file.
    #[allow(unsafe_code)]
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
        let len = file.metadata().map_err(|e| io_error(path, &e))?.len();
        if len == 0 {
            return Err(CoreError::invalid_input(format!(
                "{}: the safetensors file is empty",
                path.display()
            )));
        }
        // SAFETY: the map is read-only and private to this struct, which lives only while a
        // model loads; the crate documents that the file must not be modified or truncated
        // meanwhile (another process doing so is the one way this could read changing bytes
        // or fault, as with any memory-mapped file).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, &e))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The file's tensors, with `prefix` prepended to every name looked up (`bert.` for
    /// checkpoints saved from a task model).
    ///
    /// Errors: `InvalidInput` naming the file when its header is malformed or its offsets
    /// leave the file.
    pub(crate) fn tensors(&self) -> Result<Tensors<'_>> {
        let st = SafeTensors::deserialize(&self.map).map_err(|e| {
            CoreError::invalid_input(format!("{}: not a valid safetensors file: {e}", self.path.display()))
        })?;
        Ok(Tensors {
            st,
            path: &self.path,
            prefix: String::new(),
        })
    }
}

/// The tensors of a mapped file, looked up by name.
pub(crate) struct Tensors<'a> {
    st: SafeTensors<'a>,
    path: &'a Path,
    prefix: String,
}

impl<'a> Tensors<'a> {
    /// Whether the file has a tensor of this exact name (no prefix).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// Looks every later name up as `prefix + name`.
    pub(crate) fn set_prefix(&mut self, prefix: &str) {
        prefix.clone_into(&mut self.prefix);
    }

    /// The prefix names are looked up under.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        self.path
    }

    /// The values of tensor `name` as f32, which must have exactly `shape`: borrowed from the
    /// map for aligned little-endian F32 data, converted for F16 and BF16.
    ///
    /// Errors: `InvalidInput` for a missing tensor, `ShapeMismatch` for another shape,
    /// `Unsupported` for another dtype; each names the tensor and the file.
    pub(crate) fn f32s(&self, name: &str, shape: &[usize]) -> Result<Cow<'a, [f32]>> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .st
            .tensor(&full)
            .map_err(|_| CoreError::invalid_input(format!("{}: missing tensor {full}", self.path.display())))?;
        if view.shape() != shape {
            return Err(CoreError::shape_mismatch(
                format!("tensor {full} in {}", self.path.display()),
                shape,
                view.shape(),
            ));
        }
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(v) if cfg!(target_endian = "little") => Cow::Borrowed(v),
                _ => Cow::Owned(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
            },
            Dtype::F16 => Cow::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => Cow::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            other => {
                return Err(CoreError::unsupported(
                    format!("tensor {full} in {} (f32, f16 or bf16 expected)", self.path.display()),
                    format!("{other:?}"),
                ))
            }
        })
    }
}
