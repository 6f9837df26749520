//! Rendering of the resolver's desired state (being written).
