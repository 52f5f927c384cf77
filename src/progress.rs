//! Progress display for multi-host work, fed by events from the transport pool.
