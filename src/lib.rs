//! aihal
