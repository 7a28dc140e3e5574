//! attnrec: recommends catalogue items for a shopper's free text with a BERT encoder, a
//! learned dynamic-attention pooling head and an HNSW index.

pub mod api;
pub mod auth;
pub mod batcher;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod encoder;
pub mod eval;
pub mod explain;
pub mod feedback;
pub mod filter;
pub mod history;
pub mod indexer;
pub mod metrics;
pub mod pooling;
pub mod segment;
pub mod service;
pub mod telemetry;
pub mod testing;
pub mod train;
