//! FRR placeholder
