//! esync-package (being built).
