//! The op set aihal models are written against, and the execution-provider contract every
//! backend implements once.
//!
//! - [`Provider`]: a backend on one device (the CPU, a CubeCL runtime on a GPU, the NPU). It
//!   answers what it can run, prepares an op once into its resident form, moves activations
//!   in, and runs prepared ops.
//! - [`Executor`]: the providers of a process in order of preference, the placement policy,
//!   strict mode and the record of what ran where ([`Executor::report`]).
//! - The ops: [`Linear`], [`RmsNorm`], [`LayerNorm`], [`Softmax`], [`Act`] (SiLU, GELU in
//!   both forms), [`Gated`] (SwiGLU, GeGLU), [`Add`], [`Rope`], [`Embedding`] and
//!   [`Attention`] over a [`KvCache`]. Each is placed when built and reports where each call
//!   ran ([`Dispatched::ran_on`](aihal_core::Dispatched)).
//! - [`Tensor`]: an activation where it lives. An op's output stays on the provider that ran
//!   it, and moves only when the next op runs elsewhere or the caller reads it.
//!
//! Each op's definition of correct is `aihal-reference`; no provider falls back to another
//! backend by itself: that is the executor's job, warned once and recorded.
//!
//! The `aihal` facade builds the process's executor from the compiled-in providers and the
//! `RUST_AI_*` variables (`aihal::executor()`).
#![forbid(unsafe_code)]

pub mod calibrate;
mod executor;
mod interop;
mod layers;
pub mod plan;
mod provider;
mod record;
pub mod table;
mod tensor;

pub use executor::{Executor, ExecutorBuilder};
pub use interop::LinearWeight;
pub use layers::{
    check_token_ids, Act, Add, Attention, Embedding, Gated, KvCache, LayerNorm, Linear, Planned, RmsNorm, Rope, Softmax,
};
pub use provider::{
    Activation, AttentionKind, Call, KvLayout, KvStore, LinearPrecision, OpKind, OpSpec, Prepared, Provider, Support,
};
pub use record::{Fallback, Report, ReportRow};
pub use tensor::{DeviceData, Shape, Tensor, MAX_RANK};

pub use aihal_reference::{AttentionShape, GateActivation, RopeStyle};
