//! The device context every op runs in: a CubeCL client, the launch limits read from it, and
//! the helper that turns every CubeCL failure (an error or a panic inside CubeCL) into a
//! [`CoreError`].

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use aihal_core::{CoreError, Result};
use cubecl::ir::features::Plane;
use cubecl::prelude::*;
use cubecl::server::Handle;

/// Launch limits of a device, read from its CubeCL client (never assumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most units (threads) in one cube (workgroup / block).
    pub max_units_per_cube: u32,
    /// Largest cube count per dimension.
    pub max_cube_count: (u32, u32, u32),
    /// Largest cube dimension in x.
    pub max_cube_dim_x: u32,
    /// Shared (workgroup) memory per cube, in bytes.
    pub max_shared_memory: usize,
    /// Whether plane (warp / subgroup) operations may be used.
    pub plane_ops: bool,
    /// The plane size when `plane_ops` holds and the device reports one fixed size.
    pub plane_size: Option<u32>,
    /// The largest single buffer, in bytes (wgpu's storage-binding limit on Vulkan).
    pub max_buffer_bytes: u64,
}

impl Limits {
    /// Reads the limits of `client`'s device.
    pub fn of<R: Runtime>(client: &ComputeClient<R>) -> Self {
        let hw = &client.properties().hardware;
        let plane_ops = client.features().plane.contains(Plane::Ops);
        let fixed = hw.plane_size_min == hw.plane_size_max && hw.plane_size_min > 0;
        Self {
            max_units_per_cube: hw.max_units_per_cube.max(1),
            max_cube_count: hw.max_cube_count,
            max_cube_dim_x: hw.max_cube_dim.0.max(1),
            max_shared_memory: hw.max_shared_memory_size,
            plane_ops: plane_ops && fixed,
            plane_size: (plane_ops && fixed).then_some(hw.plane_size_min),
            max_buffer_bytes: client.properties().memory.max_page_size,
        }
    }

    /// The number of units per cube for a 1-D kernel: `want` rounded down to a power of two
    /// that the device accepts (at least 1).
    pub fn units_1d(&self, want: u32) -> u32 {
        let cap = want.min(self.max_units_per_cube).min(self.max_cube_dim_x).max(1);
        1 << cap.ilog2()
    }

    /// The plane size to hand a reducing kernel for cubes of `units` units: the device's
    /// fixed plane size when plane operations are available and it divides `units`, else 0
    /// (the shared-memory path). Lavapipe reports no plane operations; NVIDIA reports 32.
    pub fn plane_for(&self, units: u32) -> u32 {
        match self.plane_size {
            Some(p) if self.plane_ops && p > 0 && units.is_multiple_of(p) => p,
            _ => 0,
        }
    }

    /// A cube count of `cubes` cubes, spread over x and y when x alone cannot hold them.
    /// Kernels recover the linear cube index as `CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X`
    /// and skip indices past `cubes`.
    pub fn cube_count_1d(&self, cubes: u64) -> Result<CubeCount> {
        let max_x = u64::from(self.max_cube_count.0.max(1));
        let max_y = u64::from(self.max_cube_count.1.max(1));
        let cubes = cubes.max(1);
        if cubes <= max_x {
            return Ok(CubeCount::Static(cubes as u32, 1, 1));
        }
        let y = cubes.div_ceil(max_x);
        if y > max_y {
            return Err(CoreError::invalid_input(format!(
                "{cubes} workgroups exceed the device limit of {max_x} x {max_y}; split the work"
            )));
        }
        Ok(CubeCount::Static(max_x as u32, y as u32, 1))
    }
}

/// A device to run kernels on: a CubeCL client with its limits.
///
/// Cheap to clone (the client is reference counted). Build one with [`Context::new`] from a
/// runtime device; the backend crates build it only after probing that the device exists,
/// since CubeCL's own client constructors panic when the driver is missing.
pub struct Context<R: Runtime> {
    client: ComputeClient<R>,
    limits: Limits,
    backend: &'static str,
}

impl<R: Runtime> Clone for Context<R> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            limits: self.limits,
            backend: self.backend,
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Context<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.backend)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Context<R> {
    /// Opens `device`. A panic inside CubeCL (no driver, no adapter) becomes
    /// `DeviceNotAvailable`.
    pub fn new(device: &R::Device) -> Result<Self> {
        let client = catch_unwind(AssertUnwindSafe(|| R::client(device))).map_err(|p| {
            CoreError::device_not_available(
                format!("{device:?}"),
                format!("the runtime failed to open it: {}", panic_text(&*p)),
            )
        })?;
        Ok(Self::from_client(client))
    }

    /// Wraps an existing client.
    pub fn from_client(client: ComputeClient<R>) -> Self {
        let limits = Limits::of(&client);
        let backend = R::name(&client);
        Self {
            client,
            limits,
            backend,
        }
    }

    /// The CubeCL client.
    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }

    /// The launch limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The runtime's name (`wgpu<wgsl>`, `cuda`), used in error messages.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Whether the device can hold elements of type `E` (f16 and bf16 are optional on
    /// Vulkan).
    pub fn supports<E: CubePrimitive>(&self) -> bool {
        self.client.properties().supports_type(E::as_type_native_unchecked())
    }

    /// `Unsupported` unless the device can hold `E`.
    pub(crate) fn require<E: CubePrimitive>(&self, op: &str) -> Result<()> {
        if self.supports::<E>() {
            Ok(())
        } else {
            Err(CoreError::unsupported(
                format!("{op} on {}", self.backend),
                std::any::type_name::<E>().rsplit("::").next().unwrap_or("this type"),
            ))
        }
    }

    /// Runs `launch` (which enqueues one kernel) and flushes the queue, turning a CubeCL
    /// error or panic into a `Kernel` error naming `kernel`.
    pub(crate) fn launch(&self, kernel: &str, launch: impl FnOnce()) -> Result<()> {
        catch_unwind(AssertUnwindSafe(launch)).map_err(|p| CoreError::kernel(self.backend, kernel, panic_text(&*p)))?;
        self.client
            .flush()
            .map_err(|e| CoreError::kernel(self.backend, kernel, first_line(&e.to_string())))
    }

    /// `OutOfMemory` for a buffer larger than the device's largest single buffer (CubeCL
    /// would fail on its server thread, out of the caller's reach).
    fn check_size(&self, bytes: usize) -> Result<()> {
        if bytes as u64 > self.limits.max_buffer_bytes {
            return Err(CoreError::out_of_memory(
                format!(
                    "{} (one buffer holds at most {} bytes on this device; split the tensor)",
                    self.backend, self.limits.max_buffer_bytes
                ),
                Some(bytes as u64),
            ));
        }
        Ok(())
    }

    /// Waits until every kernel queued on this client has finished (benchmarks stop the
    /// clock after this).
    pub fn sync(&self) -> Result<()> {
        cubecl::future::block_on(self.client.sync())
            .map_err(|e| CoreError::kernel(self.backend, "sync", first_line(&e.to_string())))
    }

    /// Uploads `data` (an empty slice gives a one-element buffer of length 0, as Vulkan
    /// cannot bind an empty buffer).
    pub fn upload<E: CubeElement>(&self, data: &[E]) -> Result<DeviceBuffer<R, E>> {
        let padded: &[E] = if data.is_empty() { &[E::minimum_value()] } else { data };
        self.check_size(std::mem::size_of_val(padded))?;
        let handle = catch_unwind(AssertUnwindSafe(|| self.client.create_from_slice(E::as_bytes(padded))))
            .map_err(|p| CoreError::kernel(self.backend, "upload", panic_text(&*p)))?;
        Ok(DeviceBuffer::new(handle, data.len()))
    }

    /// Allocates an uninitialized buffer of `len` elements of `E`.
    pub fn alloc<E: CubeElement>(&self, len: usize) -> Result<DeviceBuffer<R, E>> {
        let bytes = len
            .max(1)
            .checked_mul(std::mem::size_of::<E>())
            .ok_or_else(|| CoreError::invalid_input(format!("{len} elements overflow the address space")))?;
        self.check_size(bytes)?;
        let handle = catch_unwind(AssertUnwindSafe(|| self.client.empty(bytes)))
            .map_err(|_| CoreError::out_of_memory(self.backend, Some(bytes as u64)))?;
        Ok(DeviceBuffer::new(handle, len))
    }

    /// Reads `buffer` back to the host (waits for the kernels that write it).
    pub fn download<E: CubeElement>(&self, buffer: &DeviceBuffer<R, E>) -> Result<Vec<E>> {
        let len = buffer.len();
        let bytes = catch_unwind(AssertUnwindSafe(|| self.client.read_one(buffer.handle().clone())))
            .map_err(|p| CoreError::kernel(self.backend, "download", panic_text(&*p)))?
            .map_err(|e| CoreError::kernel(self.backend, "download", first_line(&e.to_string())))?;
        let want = len * std::mem::size_of::<E>();
        if bytes.len() < want {
            return Err(CoreError::shape_mismatch(
                "device buffer read back (bytes)",
                [want],
                [bytes.len()],
            ));
        }
        Ok(bytemuck::pod_collect_to_vec(&bytes[..want]))
    }
}

fn first_line(s: &str) -> String {
    s.lines().take(3).collect::<Vec<_>>().join(" ")
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .map_or_else(|| "the runtime panicked".to_owned(), |s| first_line(&s))
}

/// A device buffer of `len` elements of `E`, the unit every op reads and writes.
///
/// The length is kept with the handle (CubeCL pads allocations), so every op can check that
/// its operands have the sizes it needs.
pub struct DeviceBuffer<R: Runtime, E> {
    handle: Handle,
    len: usize,
    _marker: PhantomData<(R, E)>,
}

impl<R: Runtime, E> Clone for DeviceBuffer<R, E> {
    fn clone(&self) -> Self {
        Self::new(self.handle.clone(), self.len)
    }
}

impl<R: Runtime, E> std::fmt::Debug for DeviceBuffer<R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("len", &self.len)
            .field("element", &std::any::type_name::<E>())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, E> DeviceBuffer<R, E> {
    pub(crate) fn new(handle: Handle, len: usize) -> Self {
        Self {
            handle,
            len,
            _marker: PhantomData,
        }
    }

    /// Wraps a CubeCL handle holding at least `len` elements of `E`.
    ///
    /// # Safety
    ///
    /// `handle` must hold at least `len * size_of::<E>()` bytes: kernels index it up to
    /// `len` without further checks.
    pub unsafe fn from_raw_parts(handle: Handle, len: usize) -> Self {
        Self::new(handle, len)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CubeCL handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// `ShapeMismatch` unless the buffer holds exactly `len` elements.
    pub(crate) fn expect_len(&self, what: &str, len: usize) -> Result<()> {
        if self.len == len {
            Ok(())
        } else {
            Err(CoreError::shape_mismatch(what, [len], [self.len]))
        }
    }

    /// The buffer as a kernel argument.
    pub(crate) fn arg(&self) -> ArrayArg<R> {
        // SAFETY: every constructor guarantees `len` elements fit in the handle (`upload` and
        // `alloc` allocate at least that, `from_raw_parts` makes it the caller's promise).
        unsafe { ArrayArg::from_raw_parts(self.handle.clone(), self.len.max(1)) }
    }
}

/// The linear cube index of a kernel launched with [`Limits::cube_count_1d`].
#[cube]
pub(crate) fn cube_index() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(plane: Option<u32>, max_units: u32, max_count: u32) -> Limits {
        Limits {
            max_units_per_cube: max_units,
            max_cube_count: (max_count, max_count, max_count),
            max_cube_dim_x: max_units,
            max_shared_memory: 16 << 10,
            plane_ops: plane.is_some(),
            plane_size: plane,
            max_buffer_bytes: 1 << 27,
        }
    }

    #[test]
    fn cube_sizes_are_powers_of_two_within_the_device_limit() {
        let l = limits(None, 1024, 65_535);
        assert_eq!(l.units_1d(256), 256);
        assert_eq!(l.units_1d(200), 128);
        assert_eq!(l.units_1d(0), 1);
        let small = limits(None, 96, 65_535);
        assert_eq!(small.units_1d(256), 64);
    }

    #[test]
    fn cube_counts_spill_into_y_and_refuse_what_cannot_fit() {
        let l = limits(None, 256, 1000);
        assert!(matches!(l.cube_count_1d(0).unwrap(), CubeCount::Static(1, 1, 1)));
        assert!(matches!(l.cube_count_1d(1000).unwrap(), CubeCount::Static(1000, 1, 1)));
        assert!(matches!(l.cube_count_1d(1001).unwrap(), CubeCount::Static(1000, 2, 1)));
        assert!(matches!(
            l.cube_count_1d(999_999).unwrap(),
            CubeCount::Static(1000, 1000, 1)
        ));
        let err = l.cube_count_1d(1_000_001).unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    }

    #[test]
    fn plane_reductions_only_with_plane_ops_and_a_dividing_plane_size() {
        assert_eq!(limits(None, 1024, 65_535).plane_for(256), 0);
        let nvidia_like = limits(Some(32), 1024, 65_535);
        assert_eq!(nvidia_like.plane_for(256), 32);
        assert_eq!(nvidia_like.plane_for(16), 0);
        let wide = limits(Some(64), 1024, 65_535);
        assert_eq!(wide.plane_for(32), 0);
        assert_eq!(wide.plane_for(128), 64);
    }
}
