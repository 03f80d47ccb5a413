//! Process metrics of the running service for sonde (CPU, memory, threads, file descriptors, uptime), collected when a snapshot is taken.
#![warn(missing_docs)]
