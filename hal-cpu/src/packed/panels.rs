//! `matmul_packed` over panels (AVX2's 8 rows, AVX-512 VNNI's 16, NEON's 4): validation,
//! threads over whole panels, and the exact path on rows converted back to their format.

use aihal_core::{CoreError, Result};

use crate::kernels::panel_dispatch;
#[cfg(target_arch = "x86_64")]
use crate::kernels::panels::Kind;
use crate::kernels::panels::{self, Packed};
use crate::kernels::{self, ActQ8, Panel, EXACT_PANEL, EXACT_PANEL_MIN_ROWS, MAX_ROWS};
use crate::matmul::{output_len, ActivationPrecision, Activations};

/// Checks `x` (`m` rows of `K`) and `out` (`[m, N]`) as `matmul_into` does, then runs.
pub(super) fn run(
    p: &Packed,
    x: Activations<'_>,
    m: usize,
    precision: ActivationPrecision,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (p.n, p.k);
    let want = m
        .checked_mul(k)
        .ok_or_else(|| CoreError::invalid_input(format!("matmul activations: {m} rows of {k} values overflow")))?;
    if x.len() != want {
        return Err(CoreError::shape_mismatch(
            format!("matmul activations x ([M = {m}, K = {k}] row-major)"),
            [want],
            [x.len()],
        ));
    }
    let want = output_len(m, n)?;
    if out.len() != want {
        return Err(CoreError::shape_mismatch("matmul output [M, N]", [want], [out.len()]));
    }
    let x = x.to_f32();
    run_validated(p, &x, m, precision, out);
    Ok(())
}

/// Runs `panel(p, y, tile)` for every span `p` of `pr` weight rows of `w` (a panel, or what
/// one kernel call covers) on the pool (the caller taking part, see [`crate::pool`]), `y`
/// holding the span's outputs as `y[pr * i + j]`, and copies them into `out` (`[m, N]`). A
/// task owns the columns of its spans ([`guided_spans`]) in every output row: the rows split
/// into disjoint slices, so the results go straight to `out`, without a transposed copy.
fn for_each_panel(
    w: &Packed,
    m: usize,
    pr: usize,
    out: &mut [f32],
    panel: impl Fn(usize, &mut [f32], &mut Tile) + Sync,
) {
    let n = w.n;
    let spans = guided_spans(n.div_ceil(pr), crate::pool::threads());
    let mut tasks: Vec<(usize, Vec<&mut [f32]>)> = Vec::with_capacity(spans.len());
    let mut rows: Vec<&mut [f32]> = out.chunks_mut(n).collect();
    for &(first, count) in &spans {
        let width = (count * pr).min(n - first * pr);
        let mut dst = Vec::with_capacity(m);
        for row in &mut rows {
            let (head, rest) = std::mem::take(row).split_at_mut(width);
            dst.push(head);
            *row = rest;
        }
        tasks.push((first, dst));
    }
    crate::pool::run_tasks(tasks, |_, (first, mut dst)| {
        let mut tile = Tile::default();
        let mut y = vec![0.0f32; pr * m];
        let width = dst[0].len();
        for t in 0..width.div_ceil(pr) {
            let p = first + t;
            let cols = pr.min(width - t * pr);
            panel(p, &mut y, &mut tile);
            for (i, row) in dst.iter_mut().enumerate() {
                row[t * pr..t * pr + cols].copy_from_slice(&y[pr * i..pr * i + cols]);
            }
        }
    });
}

/// `panels` panels split into tasks for `threads` threads, as (first panel, count): one
/// task on one thread; otherwise largest first, each what is left over twice the thread
/// count (guided scheduling), so that the tasks taken last, which decide when the call ends,
/// are single panels, and a thread that joins late still finds work.
fn guided_spans(panels: usize, threads: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at < panels {
        let count = if threads <= 1 {
            panels - at
        } else {
            (panels - at).div_ceil(2 * threads).max(1)
        };
        spans.push((at, count));
        at += count;
    }
    spans
}

/// Validated inputs over the panels.
fn run_validated(w: &Packed, x: &[f32], m: usize, precision: ActivationPrecision, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    let threads = crate::pool::threads();
    // FP8 packs only for AVX-512.
    #[cfg(target_arch = "x86_64")]
    if let Kind::Fp8 { .. } = w.kind {
        let stride = 32 * w.nb;
        if k == 0 {
            out.fill(0.0);
            return;
        }
        if precision == ActivationPrecision::Int8 && kernels::cpu().avx512_bf16 {
            // FP8 has no int8 codes: the reduced-precision path rounds the activations to
            // bf16 instead, and the rows that bf16 cannot carry take the f32 kernel.
            let act = kernels::x86_packed512::Bf16Act::new(x, m, k, stride);
            let exact: Vec<usize> = (0..m).filter(|&i| act.exact_rows[i]).collect();
            let padded: Vec<f32> = exact
                .iter()
                .flat_map(|&i| {
                    x[i * k..(i + 1) * k]
                        .iter()
                        .copied()
                        .chain(std::iter::repeat_n(0.0, stride - k))
                })
                .collect();
            for_each_panel(w, m, w.isa.rows(), out, |p, y, _| {
                kernels::x86_packed512::fp8_bf16_panel(w, p, &act, y);
                for (e, &i) in exact.iter().enumerate() {
                    let row = &padded[e * stride..(e + 1) * stride];
                    kernels::x86_packed512::fp8_panel(w, p, row, stride, 1, &mut y[16 * i..16 * (i + 1)]);
                }
            });
            return;
        }
        // The f32 path (and the reduced-precision one without AVX-512 BF16): the exact packed
        // kernel, on activation rows zero padded to whole blocks.
        let padded: Vec<f32>;
        let xs = if stride == k {
            x
        } else {
            padded = x
                .chunks_exact(k.max(1))
                .take(m)
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(0.0, stride - k)))
                .collect();
            &padded[..]
        };
        for_each_panel(w, m, w.isa.rows(), out, |p, y, _| {
            kernels::x86_packed512::fp8_panel(w, p, xs, stride, m, y);
        });
        return;
    }
    match precision {
        ActivationPrecision::F32 => {
            // One output row per weight row (`yt` is [N, m]), so that threads own disjoint
            // slices.
            let mut transposed = if m == 1 { Vec::new() } else { vec![0.0f32; n * m] };
            let yt: &mut [f32] = if m == 1 { &mut *out } else { &mut transposed };
            let per_task = n.div_ceil(threads * 4).next_multiple_of(EXACT_PANEL).max(EXACT_PANEL);
            crate::pool::run_tasks(yt.chunks_mut(per_task * m).collect(), |c, ych: &mut [f32]| {
                let mut tile = Tile::default();
                for (t, ytile) in ych.chunks_mut(EXACT_PANEL * m).enumerate() {
                    let n0 = c * per_task + t * EXACT_PANEL;
                    tile.exact(w, n0, ytile.len() / m, x, m, (0..m).map(|i| (i, true)), ytile);
                }
            });
            if m > 1 {
                for (j, col) in transposed.chunks_exact(m).enumerate() {
                    for (i, &v) in col.iter().enumerate() {
                        out[i * n + j] = v;
                    }
                }
            }
        }
        ActivationPrecision::Int8 => {
            let a = ActQ8::quantize(x, m, k);
            let act = panels::PackedAct::new(w, &a);
            let pr = panel_dispatch::call_rows(w, m);
            let any_bad = a.non_finite.contains(&true);
            for_each_panel(w, m, pr, out, |u, y, tile| {
                panel_dispatch::panel(w, u, &act, y);
                // Rows with NaN or infinities take the exact path, as everywhere, one panel
                // of weight rows at a time.
                if any_bad {
                    let (n0, cols) = (u * pr, pr.min(n - u * pr));
                    for c0 in (0..cols).step_by(w.isa.rows()) {
                        let c = w.isa.rows().min(cols - c0);
                        let mut yt = vec![0.0f32; c * m];
                        let rows = a.non_finite.iter().enumerate().map(|(i, &bad)| (i, bad));
                        tile.exact(w, n0 + c0, c, x, m, rows, &mut yt);
                        for (i, _) in a.non_finite.iter().enumerate().filter(|(_, &bad)| bad) {
                            for j in 0..c {
                                y[pr * i + c0 + j] = yt[j * m + i];
                            }
                        }
                    }
                }
            });
        }
    }
}

/// Reused buffers for rows converted back to their format.
#[derive(Default)]
struct Tile {
    data: Vec<u8>,
    scales: Vec<f32>,
    panel: Panel,
}

impl Tile {
    /// The exact path for weight rows `n0 .. n0 + cols` (`n0` a multiple of the panel rows,
    /// `cols <= 16`)
    /// and the activation rows `i` flagged in `rows`, written to `yt[j * m + i]`: the kernels
    /// and row grouping [`matmul_with`](crate::matmul_with) uses on the f32 path, on these
    /// rows converted back to their format.
    #[allow(clippy::too_many_arguments)]
    fn exact(
        &mut self,
        w: &Packed,
        n0: usize,
        cols: usize,
        x: &[f32],
        m: usize,
        rows: impl Iterator<Item = (usize, bool)>,
        yt: &mut [f32],
    ) {
        let k = w.k;
        let tile = w.unpack_rows(
            n0,
            cols,
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.scales),
        );
        let set = kernels::best();
        let exact = (set.exact)(w.format);
        let rows: Vec<usize> = rows.filter_map(|(i, on)| on.then_some(i)).collect();
        let all = rows.len() == m;
        match set
            .exact_panel_kernel(w.format)
            .filter(|_| all && m >= EXACT_PANEL_MIN_ROWS)
        {
            // SAFETY: the kernels come from the table detected for this CPU for the tile's
            // format; the tile is a valid [cols, K] tensor of that format (checked by
            // `from_parts`); x holds m rows of K; yt holds cols * m values; cols <= 16.
            Some(p) => unsafe { p(&tile, 0, cols, x, m, &mut self.panel, yt) },
            None if all => {
                for j in 0..cols {
                    let mut i0 = 0;
                    while i0 < m {
                        let r = MAX_ROWS.min(m - i0);
                        let dst = &mut yt[j * m + i0..j * m + i0 + r];
                        // SAFETY: as above; rows i0 .. i0 + r of x exist, dst holds r values.
                        unsafe { exact(&tile, j, &x[i0 * k..(i0 + r) * k], r, dst) };
                        i0 += r;
                    }
                }
            }
            None => {
                for j in 0..cols {
                    for &i in &rows {
                        let dst = std::slice::from_mut(&mut yt[j * m + i]);
                        // SAFETY: as above, for the single row i of x.
                        unsafe { exact(&tile, j, &x[i * k..(i + 1) * k], 1, dst) };
                    }
                }
            }
        }
        let (_, _, data, scales) = tile.into_parts();
        self.data = data;
        self.scales = scales;
    }
}

#[cfg(test)]
mod tests {
    use super::guided_spans;

    #[test]
    fn guided_spans_cover_every_panel_once_largest_first() {
        assert_eq!(guided_spans(72, 1), vec![(0, 72)]);
        assert_eq!(guided_spans(0, 2), vec![]);
        for threads in [2, 3, 8] {
            for panels in [1, 2, 5, 24, 72, 6144] {
                let spans = guided_spans(panels, threads);
                let mut at = 0;
                for &(first, count) in &spans {
                    assert_eq!(first, at, "{panels} panels, {threads} threads: {spans:?}");
                    assert!(count >= 1);
                    at += count;
                }
                assert_eq!(at, panels);
                assert!(spans.windows(2).all(|w| w[0].1 >= w[1].1), "{spans:?}");
                assert_eq!(spans.last().map(|s| s.1), Some(1), "{spans:?}");
                // Each at most what was left over twice the thread count.
                assert!(spans[0].1 <= panels.div_ceil(2 * threads));
            }
        }
    }
}
