//! Loading a decoder from its GGUF file copies no tensor more than it must: the most bytes
//! live while [`LlamaModel::load`] runs exceed those live once it returns by at most what a
//! load has to hold besides the model it builds. A counting allocator (`common::counting`,
//! registered here) tracks the bytes live in this binary, which holds this one test so that
//! no other test's allocations mix in.
//!
//! Bound: peak − live after the load ≤ the parsed header (measured here by parsing it once
//! more, before the load) + the largest piece read at once + 2 MiB. Each weight is read, then
//! prepared (packed), and its stored copy goes once the op is built: one such copy at a time,
//! plus the header that names the tensors; the 2 MiB cover the read buffer, the norms' small
//! vectors and the executor's records. A piece is a tensor, or, of a quantized tensor larger
//! than `LlamaOptions::vocab_part_bytes` (32 MiB by default; Gemma 3's 170 MiB embedding
//! table), a part of its rows of at most that size: the model reads such a table a part at a
//! time, each part made into its own ops before the next is read. The embedding table (tied to the output projection in both files) is held until
//! the output projection is packed from it; the embedding op then reads rows from that
//! projection's weight (`Embedding::tied`), so the table as stored is not kept. Any tensor copied once more at load exceeds the bound by that
//! tensor's size less the slack: the old provider cloned each weight before packing it, the
//! old loader kept the table beside its op's copy of it, and the loads left 351 MiB (Gemma 3
//! 270M, whose tied Q8_0 table is 170 MiB) and 61 MiB (SmolLM2-135M Q4_1, 28.7 MiB) above the
//! loaded model. The peak is the process's highest count since it started (before the load:
//! the header parse, a few MiB), so an earlier peak could only make the test fail, never pass.
//!
//! What the loaded model holds: at most what the packed layouts take for the file's tensors
//! (as stored, but Q6_K as 8-bit codes, 34 bytes per 32 values, as the AVX-512 layout holds
//! it (AVX2's and NEON's keep its 210 bytes per 256 values), and Q4_K as 148 bytes per 256
//! values; `hal-cpu`'s packed layouts) + 2 MiB. A
//! second copy of the tied table (170 MiB for Gemma 3, 28.7 MiB for SmolLM2) exceeds it. With
//! f32 activations (`LinearPrecision::F32`) the CPU provider keeps every weight as stored: the
//! loaded model then holds at most the file's tensors as stored plus 2 MiB.

mod common;

use std::fs::File;
use std::io::BufReader;

use aihal_models::llama::{LlamaModel, LlamaOptions};
use aihal_ops::LinearPrecision;
use aihal_quantize::GgufFile;
use common::counting::{live, peak, Counting};

fn main() {
    common::run(vec![common::trial(
        "loading_a_gguf_decoder_holds_one_stored_tensor_at_a_time",
        &[common::Data::Gguf(SMOLLM2), common::Data::Gguf(GEMMA3)],
        loading_a_gguf_decoder_holds_one_stored_tensor_at_a_time,
    )]);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

const MIB: f64 = 1024.0 * 1024.0;

fn loading_a_gguf_decoder_holds_one_stored_tensor_at_a_time() {
    // One model after the other, in one test, so that their counts do not mix; the smaller
    // first, so that its peak is not the larger one's.
    for name in [SMOLLM2, GEMMA3] {
        let path = common::gguf_path(name);
        let before = live();
        let header = GgufFile::read(&mut BufReader::new(File::open(&path).expect("open"))).expect("header");
        let header_bytes = live() - before;
        let largest = header
            .tensors()
            .iter()
            .filter_map(|t| {
                let len = t.byte_len()?;
                // The loads below keep the default parts.
                let part = LlamaOptions::default().vocab_part_bytes as u64;
                Some(if t.ggml_type().quant_format().is_some() {
                    len.min(part)
                } else {
                    len
                })
            })
            .max()
            .expect("tensors");
        let packed: u64 = header.tensors().iter().map(packed_bytes).sum();
        drop(header);

        let exec = common::cpu_executor();
        let before = live();
        let model = LlamaModel::load(&exec, &path, LlamaOptions::default()).expect("load");
        let after = live();
        let transient = peak() as isize - after;
        let bound = header_bytes + largest as isize + (2 << 20);
        eprintln!(
            "{name}: the model holds {:.1} MiB; the load's peak is {:.1} MiB above that (bound {:.1} MiB: header \
             {:.1} MiB, largest piece read {:.1} MiB)",
            (after - before) as f64 / MIB,
            transient as f64 / MIB,
            bound as f64 / MIB,
            header_bytes as f64 / MIB,
            largest as f64 / MIB,
        );
        assert!(
            transient <= bound,
            "{name}: the load peaked {transient} bytes above the loaded model, more than {bound}"
        );
        let held = after - before;
        let held_bound = packed as isize + (2 << 20);
        eprintln!(
            "{name}: bound on what the model holds {:.1} MiB (its tensors in the packed layouts)",
            held_bound as f64 / MIB
        );
        assert!(
            held <= held_bound,
            "{name} holds {held} bytes, more than {held_bound}: a tensor is held twice"
        );
        drop(model);
    }

    let path = common::gguf_path(SMOLLM2);
    let header = GgufFile::read(&mut BufReader::new(File::open(&path).expect("open"))).expect("header");
    let stored: u64 = header
        .tensors()
        .iter()
        .filter_map(aihal_quantize::GgufTensorInfo::byte_len)
        .sum();
    drop(header);
    let exec = common::cpu_executor();
    let options = LlamaOptions {
        precision: LinearPrecision::F32,
        ..LlamaOptions::default()
    };
    let before = live();
    let model = LlamaModel::load(&exec, &path, options).expect("load");
    let held = live() - before;
    let bound = stored as isize + (2 << 20);
    eprintln!(
        "{SMOLLM2}, f32 activations: the model holds {:.1} MiB (bound {:.1} MiB: its tensors as stored {:.1} MiB)",
        held as f64 / MIB,
        bound as f64 / MIB,
        stored as f64 / MIB,
    );
    assert!(
        held <= bound,
        "{SMOLLM2} with f32 activations holds {held} bytes, more than {bound}: a tensor is held twice"
    );
    drop(model);
}

/// The bytes `t` takes in aihal-cpu's packed layouts at most: as stored, but Q6_K as 8-bit
/// codes (34 bytes per 32 values plus 2 per 256; AVX2's and NEON's layouts keep the stored 210 per 256) and Q4_K as 148 bytes per
/// 256 values (the file's 144 and `d`/`dmin` beside the sub-block scales).
fn packed_bytes(t: &aihal_quantize::GgufTensorInfo) -> u64 {
    use aihal_quantize::GgmlType;
    let stored = t.byte_len().expect("a tensor of a known type");
    let values = t.shape().iter().product::<usize>() as u64;
    match t.ggml_type() {
        GgmlType::Q6_K => values / 32 * 34 + values / 256 * 2,
        GgmlType::Q4_K => values / 256 * 148,
        _ => stored,
    }
}
