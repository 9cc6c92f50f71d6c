//! SSO sign-in hook (being written).
