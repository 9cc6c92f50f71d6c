//! Scheduled sync (being written).
