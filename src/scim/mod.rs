pub mod filter;
pub mod patch;
