//! Operating Turnout: the admin listener ([`admin`]: metrics, status, split
//! changes, rollbacks) and the read-only views of the public listener
//! ([`models`]: `/v1/models`, `/v1/account`).

pub mod admin;
pub mod health;
pub mod models;
