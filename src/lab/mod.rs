//! The lab: a replica of Picasoft's two sites on this machine, made of containers.
