//! Operating Turnout: the admin listener ([`admin`]: metrics, status, split
//! changes, rollbacks; [`traffic`]: the counters behind live rates), the
//! operator's web page ([`page`]), and the read-only views of the public
//! listener ([`models`]: `/v1/models`, `/v1/account`).

pub mod admin;
pub mod health;
pub mod models;
pub mod page;
pub mod traffic;
