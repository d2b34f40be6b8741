//! Tokenizers built from a GGUF file's metadata (GPT-2 byte-level BPE and SentencePiece
//! vocabularies) and the chat template it stores, rendered with minijinja.
