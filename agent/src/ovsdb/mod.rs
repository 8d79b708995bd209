//! RFC 7047 OVSDB client over a unix socket. Filled in by the OVSDB work.
