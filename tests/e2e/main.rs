//! End-to-end tests: each starts the real `wasmkube` binary and drives it with
//! real clients (kubectl, curl, the official Python client).

mod api;
mod bad_input;
mod controllers;
mod debug;
mod events;
mod exec;
mod harness;
mod logs;
mod node;
mod proxy;
mod python_e2e;
mod quickstart;
mod registry;
mod services;
mod wire;
