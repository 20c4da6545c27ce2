//! Operating Turnout: the admin listener ([`admin`]: metrics, status, split
//! changes, rollbacks; [`traffic`]: the counters behind live rates), the
//! operator's web page ([`page`]), the read-only views of the public
//! listener ([`models`]: `/v1/models`, `/v1/account`), and [`bench`]:
//! measuring upstreams (`turnout bench`, the benchmark's load generator);
//! [`health`]: `/ready` and `/health/upstreams`.

pub mod admin;
pub mod bench;
pub mod health;
pub mod models;
pub mod page;
pub mod traffic;
