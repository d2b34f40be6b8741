//! Decoder-only language models from GGUF files (llama and gemma3 architectures), written
//! against the aihal op set, with generation.
