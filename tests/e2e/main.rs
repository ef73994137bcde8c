//! End-to-end tests: start the real binary, drive it with real clients.
