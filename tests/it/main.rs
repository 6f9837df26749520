//! Integration tests, one binary (linking kube and the Azure SDK once, not once per file).

mod controller;
mod diff;
mod permissions;
mod pipeline;
mod resolver;
mod security;
