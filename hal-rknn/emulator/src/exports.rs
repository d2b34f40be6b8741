//! Which functions each runtime version's library exports, and per-version copies of the
//! emulator's library that export only those.
//!
//! One `cdylib` cannot change its exports at run time, so [`patch_library`] rewrites a copy:
//! every exported function the chosen version's library lacks gets local binding in the
//! copy's dynamic symbol table, which the dynamic loader skips when it resolves a name
//! (`dlsym` answers "undefined symbol", as on the real library), and the version is written
//! into [`AIHAL_RKNN_EMU_BAKED_VERSION`], which the copy then reports and behaves as.
//! [`crate::versioned_library`] makes such a copy on disk.
//!
//! The export table follows the function declarations of each version's headers
//! (`rknn_api.h`, `rknn_matmul_api.h`), except where stated: the real libraries may export
//! more (internal functions), which nothing here relies on.

use crate::version::{v, Version};

/// The version the library behaves as when it is a copy made by [`patch_library`]: a
/// NUL-terminated `X.Y.Z`, or the initial marker in the library cargo builds (which then
/// behaves as [`crate::state::DEFAULT_VERSION`] unless [`crate::state::VERSION_ENV`] says
/// otherwise). Exported so that the patcher finds it in the dynamic symbol table.
#[no_mangle]
#[used]
pub static AIHAL_RKNN_EMU_BAKED_VERSION: [u8; 16] = *b"unbaked-version\0";

/// The name of [`AIHAL_RKNN_EMU_BAKED_VERSION`] in the symbol table.
const BAKED_SYMBOL: &str = "AIHAL_RKNN_EMU_BAKED_VERSION";

/// The version baked into this copy of the library, if any.
pub fn baked_version() -> Option<Version> {
    // SAFETY: the static is 16 initialised bytes that live for the whole program; the read is
    // volatile so that the bytes in the loaded file (rewritten by `patch_library`) are read,
    // not the initialiser the compiler saw.
    let bytes = unsafe { std::ptr::read_volatile(&raw const AIHAL_RKNN_EMU_BAKED_VERSION) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok().and_then(Version::parse)
}

/// One exported function: the first version whose library exports it and, if it was
/// dropped, the first version that no longer does.
#[derive(Clone, Copy, Debug)]
pub struct Export {
    /// The C name.
    pub name: &'static str,
    /// First version exporting it.
    pub since: Version,
    /// First version no longer exporting it.
    pub until: Option<Version>,
}

const fn since(name: &'static str, version: Version) -> Export {
    Export {
        name,
        since: version,
        until: None,
    }
}

/// Every runtime function the emulator exports, with the versions that export it.
pub const EXPORTS: &[Export] = &[
    // rknn_api.h from 1.3.0 (1.2.0 spelt rknn_destroy_mem "rknn_destory_mem"; the emulator
    // starts at 1.3.0).
    since("rknn_init", v(1, 3, 0)),
    since("rknn_dup_context", v(1, 3, 0)),
    since("rknn_destroy", v(1, 3, 0)),
    since("rknn_query", v(1, 3, 0)),
    since("rknn_inputs_set", v(1, 3, 0)),
    since("rknn_set_core_mask", v(1, 3, 0)),
    since("rknn_run", v(1, 3, 0)),
    since("rknn_outputs_get", v(1, 3, 0)),
    since("rknn_outputs_release", v(1, 3, 0)),
    since("rknn_create_mem", v(1, 3, 0)),
    since("rknn_destroy_mem", v(1, 3, 0)),
    since("rknn_set_io_mem", v(1, 3, 0)),
    // rknpu2 v1.5.0 rknn_api.h: dynamic-shape inputs.
    since("rknn_set_input_shape", v(1, 5, 0)),
    // rknpu2 v1.5.2 rknn_api.h.
    since("rknn_set_input_shapes", v(1, 5, 2)),
    // rknn-toolkit2 v1.6.0 rknn_api.h.
    since("rknn_mem_sync", v(1, 6, 0)),
    // rknn-toolkit2 v2.0.0-beta0 rknn_api.h.
    since("rknn_create_mem2", v(2, 0, 0)),
    // The matmul API: declared from rknpu2 v1.5.0's rknn_matmul_api.h, but the 1.3.0 and
    // 1.4.0 libraries already export these five (aihal issue 21's check of those libraries),
    // with a struct no public header documents.
    since("rknn_matmul_create", v(1, 3, 0)),
    since("rknn_matmul_set_io_mem", v(1, 3, 0)),
    since("rknn_matmul_set_core_mask", v(1, 3, 0)),
    since("rknn_matmul_run", v(1, 3, 0)),
    since("rknn_matmul_destroy", v(1, 3, 0)),
    // rknn-toolkit2 v2.0.0-beta0 rknn_matmul_api.h.
    since("rknn_matmul_set_quant_params", v(2, 0, 0)),
    since("rknn_matmul_get_quant_params", v(2, 0, 0)),
    since("rknn_matmul_set_dynamic_shape", v(2, 0, 0)),
    // Declared by 2.0.0 only; 2.1.0 renamed it (the 2.3.0 API reference calls it
    // deprecated).
    Export {
        name: "rknn_matmul_create_dyn_shape",
        since: v(2, 0, 0),
        until: Some(v(2, 1, 0)),
    },
    // rknn-toolkit2 v2.1.0 rknn_matmul_api.h.
    since("rknn_matmul_create_dynamic_shape", v(2, 1, 0)),
];

impl Export {
    /// Whether `version`'s library exports this function.
    pub fn exported_at(&self, version: Version) -> bool {
        version >= self.since && self.until.is_none_or(|until| version < until)
    }
}

/// The functions `version`'s library exports, of those the emulator implements.
pub fn exported_at(version: Version) -> impl Iterator<Item = &'static str> {
    EXPORTS.iter().filter(move |e| e.exported_at(version)).map(|e| e.name)
}

// ---- ELF64 little-endian (x86_64 and aarch64 Linux) ---------------------------------------

const SHT_DYNSYM: usize = 11;
const PT_LOAD: usize = 1;
const STB_LOCAL: u8 = 0;
const STB_GLOBAL: u8 = 1;

fn read<const N: usize>(image: &[u8], at: usize) -> Result<[u8; N], String> {
    image
        .get(at..at.checked_add(N).ok_or("offset overflow")?)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("the library is truncated at byte {at}"))
}

fn u16_at(image: &[u8], at: usize) -> Result<usize, String> {
    Ok(u16::from_le_bytes(read(image, at)?) as usize)
}

fn u32_at(image: &[u8], at: usize) -> Result<usize, String> {
    Ok(u32::from_le_bytes(read(image, at)?) as usize)
}

fn u64_at(image: &[u8], at: usize) -> Result<usize, String> {
    usize::try_from(u64::from_le_bytes(read(image, at)?)).map_err(|_| "value exceeds usize".to_string())
}

fn c_str(image: &[u8], at: usize) -> Result<&str, String> {
    let tail = image.get(at..).ok_or("string offset outside the library")?;
    let end = tail.iter().position(|&b| b == 0).ok_or("unterminated string")?;
    std::str::from_utf8(&tail[..end]).map_err(|_| "non-UTF-8 symbol name".to_string())
}

/// Rewrites a copy of the emulator's library (`image`) so that it exports only what
/// `version`'s library exports and behaves as `version`. Answers how many functions it hid.
pub fn patch_library(image: &mut [u8], version: Version) -> Result<usize, String> {
    if image.get(..4) != Some(b"\x7fELF".as_slice()) || image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let (phoff, phentsize, phnum) = (u64_at(image, 32)?, u16_at(image, 54)?, u16_at(image, 56)?);
    let (shoff, shentsize, shnum) = (u64_at(image, 40)?, u16_at(image, 58)?, u16_at(image, 60)?);
    let section = |i: usize| shoff + i * shentsize;
    let dynsym = (0..shnum)
        .map(section)
        .find(|&s| u32_at(image, s + 4).is_ok_and(|t| t == SHT_DYNSYM))
        .ok_or("no dynamic symbol table")?;
    let (sym_off, sym_size, sym_ent) = (
        u64_at(image, dynsym + 24)?,
        u64_at(image, dynsym + 32)?,
        u64_at(image, dynsym + 56)?,
    );
    let strtab = u64_at(image, section(u32_at(image, dynsym + 40)?) + 24)?;
    if sym_ent < 24 {
        return Err(format!("symbol entries of {sym_ent} bytes"));
    }
    let mut hidden = 0;
    let mut found = Vec::new();
    let mut baked_at = None;
    for sym in (sym_off..sym_off + sym_size).step_by(sym_ent) {
        let name = c_str(image, strtab + u32_at(image, sym)?)?.to_string();
        let info = read::<1>(image, sym + 4)?[0];
        if name == BAKED_SYMBOL {
            baked_at = Some(u64_at(image, sym + 8)?);
        }
        let Some(export) = EXPORTS.iter().find(|e| e.name == name) else {
            continue;
        };
        if info >> 4 != STB_GLOBAL {
            return Err(format!("{name} is not a global symbol of this library"));
        }
        found.push(export.name);
        if !export.exported_at(version) {
            image[sym + 4] = (STB_LOCAL << 4) | (info & 0xf);
            hidden += 1;
        }
    }
    if let Some(missing) = EXPORTS.iter().find(|e| !found.contains(&e.name)) {
        return Err(format!("the library does not export {}", missing.name));
    }
    let vaddr = baked_at.ok_or_else(|| format!("the library does not export {BAKED_SYMBOL}"))?;
    let file_at = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find_map(|ph| {
            let (kind, off, addr, filesz) = (
                u32_at(image, ph).ok()?,
                u64_at(image, ph + 8).ok()?,
                u64_at(image, ph + 16).ok()?,
                u64_at(image, ph + 32).ok()?,
            );
            (kind == PT_LOAD && (addr..addr + filesz).contains(&vaddr)).then(|| vaddr - addr + off)
        })
        .ok_or("the baked-version slot is not in a loaded segment")?;
    let slot = image
        .get_mut(file_at..file_at + AIHAL_RKNN_EMU_BAKED_VERSION.len())
        .ok_or("the baked-version slot lies outside the file")?;
    let text = version.to_string();
    slot.fill(0);
    slot[..text.len()].copy_from_slice(text.as_bytes());
    Ok(hidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_table_follows_the_headers() {
        let at = |s: &str| exported_at(Version::parse(s).unwrap()).collect::<Vec<_>>();
        let has = |s: &str, f: &str| at(s).contains(&f);
        // 1.3/1.4: the matmul functions without any 1.5.0 addition.
        assert!(has("1.4.0", "rknn_matmul_create") && !has("1.4.0", "rknn_set_input_shape"));
        assert!(has("1.5.0", "rknn_set_input_shape") && !has("1.5.0", "rknn_set_input_shapes"));
        assert!(has("1.5.2", "rknn_set_input_shapes") && !has("1.5.2", "rknn_mem_sync"));
        assert!(has("1.6.0", "rknn_mem_sync") && !has("1.6.0", "rknn_matmul_set_quant_params"));
        assert!(has("2.0.0", "rknn_create_mem2") && has("2.0.0", "rknn_matmul_create_dyn_shape"));
        assert!(!has("2.0.0", "rknn_matmul_create_dynamic_shape"));
        assert!(has("2.1.0", "rknn_matmul_create_dynamic_shape") && !has("2.1.0", "rknn_matmul_create_dyn_shape"));
        assert_eq!(at("2.1.0"), at("2.3.2"), "2.2 and 2.3 added no function");
        assert_eq!(at("2.3.2").len(), EXPORTS.len() - 1);
    }

    /// A minimal shared object: one loaded segment holding everything, a dynamic string
    /// table and a dynamic symbol table with every emulator export plus the version slot.
    fn tiny_elf() -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut names = vec![];
        for e in EXPORTS {
            names.push((strtab.len(), e.name));
            strtab.extend_from_slice(e.name.as_bytes());
            strtab.push(0);
        }
        let baked_name = strtab.len();
        strtab.extend_from_slice(BAKED_SYMBOL.as_bytes());
        strtab.push(0);
        let (ehdr, phdr) = (64, 56);
        let slot_off = ehdr + phdr;
        let str_off = slot_off + 16;
        let sym_off = (str_off + strtab.len()).next_multiple_of(8);
        let nsyms = EXPORTS.len() + 2;
        let sh_off = sym_off + nsyms * 24;
        let mut f = vec![0u8; sh_off + 3 * 64];
        f[..4].copy_from_slice(b"\x7fELF");
        (f[4], f[5], f[6]) = (2, 1, 1);
        f[32..40].copy_from_slice(&(ehdr as u64).to_le_bytes());
        f[40..48].copy_from_slice(&(sh_off as u64).to_le_bytes());
        f[54..56].copy_from_slice(&(phdr as u16).to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        f[60..62].copy_from_slice(&3u16.to_le_bytes());
        // PT_LOAD: file offset 0 at address 0x10000.
        let base = 0x10000u64;
        f[ehdr..ehdr + 4].copy_from_slice(&(PT_LOAD as u32).to_le_bytes());
        f[ehdr + 16..ehdr + 24].copy_from_slice(&base.to_le_bytes());
        let total = f.len() as u64;
        f[ehdr + 32..ehdr + 40].copy_from_slice(&total.to_le_bytes());
        f[slot_off..slot_off + 16].copy_from_slice(b"unbaked-version\0");
        f[str_off..str_off + strtab.len()].copy_from_slice(&strtab);
        let mut put_sym = |i: usize, name: usize, info: u8, value: u64| {
            let s = sym_off + i * 24;
            f[s..s + 4].copy_from_slice(&(name as u32).to_le_bytes());
            f[s + 4] = info;
            f[s + 8..s + 16].copy_from_slice(&value.to_le_bytes());
        };
        for (i, (name, _)) in names.iter().enumerate() {
            put_sym(i + 1, *name, (STB_GLOBAL << 4) | 2, 0x2000 + i as u64);
        }
        put_sym(nsyms - 1, baked_name, (STB_GLOBAL << 4) | 1, base + slot_off as u64);
        // Section 1: .dynstr, section 2: .dynsym linked to it.
        let sh = |i: usize| sh_off + i * 64;
        f[sh(1) + 4..sh(1) + 8].copy_from_slice(&3u32.to_le_bytes());
        f[sh(1) + 24..sh(1) + 32].copy_from_slice(&(str_off as u64).to_le_bytes());
        f[sh(1) + 32..sh(1) + 40].copy_from_slice(&(strtab.len() as u64).to_le_bytes());
        f[sh(2) + 4..sh(2) + 8].copy_from_slice(&(SHT_DYNSYM as u32).to_le_bytes());
        f[sh(2) + 24..sh(2) + 32].copy_from_slice(&(sym_off as u64).to_le_bytes());
        f[sh(2) + 32..sh(2) + 40].copy_from_slice(&((nsyms * 24) as u64).to_le_bytes());
        f[sh(2) + 40..sh(2) + 44].copy_from_slice(&1u32.to_le_bytes());
        f[sh(2) + 56..sh(2) + 64].copy_from_slice(&24u64.to_le_bytes());
        f
    }

    fn binding(image: &[u8], name: &str) -> u8 {
        let sym_off = u64_at(image, u64_at(image, 40).unwrap() + 2 * 64 + 24).unwrap();
        let str_off = u64_at(image, u64_at(image, 40).unwrap() + 64 + 24).unwrap();
        (0..EXPORTS.len() + 2)
            .map(|i| sym_off + i * 24)
            .find(|&s| c_str(image, str_off + u32_at(image, s).unwrap()).unwrap() == name)
            .map(|s| image[s + 4] >> 4)
            .unwrap()
    }

    #[test]
    fn patching_hides_later_functions_and_bakes_the_version() {
        let original = tiny_elf();
        let mut copy = original.clone();
        let hidden = patch_library(&mut copy, v(1, 5, 0)).unwrap();
        let later = EXPORTS.iter().filter(|e| !e.exported_at(v(1, 5, 0))).count();
        assert_eq!(hidden, later);
        assert_eq!(binding(&copy, "rknn_mem_sync"), STB_LOCAL);
        assert_eq!(binding(&copy, "rknn_create_mem2"), STB_LOCAL);
        assert_eq!(binding(&copy, "rknn_set_input_shape"), STB_GLOBAL);
        assert_eq!(binding(&copy, "rknn_matmul_create"), STB_GLOBAL);
        let slot = 64 + 56;
        assert_eq!(&copy[slot..slot + 6], b"1.5.0\0");
        // Only the bindings and the slot changed.
        let changed = original.iter().zip(&copy).filter(|(a, b)| a != b).count();
        assert!(changed <= later + 16, "{changed} bytes changed");

        let mut copy = original.clone();
        assert_eq!(
            patch_library(&mut copy, v(2, 3, 2)).unwrap(),
            1,
            "only create_dyn_shape"
        );
        assert_eq!(binding(&copy, "rknn_matmul_create_dyn_shape"), STB_LOCAL);
        assert_eq!(&copy[slot..slot + 6], b"2.3.2\0");
    }

    #[test]
    fn files_that_are_not_the_emulator_are_refused() {
        assert!(patch_library(&mut [0u8; 64], v(2, 0, 0)).is_err());
        let mut short = tiny_elf();
        short.truncate(100);
        assert!(patch_library(&mut short, v(2, 0, 0)).is_err());
        let mut f = tiny_elf();
        f[5] = 2; // big-endian
        assert!(patch_library(&mut f, v(2, 0, 0)).is_err());
    }

    #[test]
    fn the_unpatched_library_has_no_baked_version() {
        assert_eq!(baked_version(), None);
    }
}
