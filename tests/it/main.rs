//! Integration tests, one binary (linking kube and the Azure SDK once, not once per file).

mod controller;
mod diff;
mod fuzz;
mod ownership;
mod pipeline;
mod resolver;
mod strict_input;
