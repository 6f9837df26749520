//! Integration tests, one binary (linking kube and the Azure SDK once, not once per file).

mod controller;
mod controller_run;
mod diff;
mod fuzz;
mod ownership;
mod pipeline;
mod resolver;
mod tenancy_controller;
mod tenancy_pipeline;
mod strict_input;
mod service_tags;
mod tunneling;
