//! The integration suite: one binary, real PostgreSQL (a database per test), the real apalis
//! queue, real HTTP over loopback.

mod books;
mod helpers;

mod api;
mod billing;
mod call_content;
mod call_shapes;
mod calls;
mod caps;
mod catalogue;
mod cli;
mod credentials;
mod layout;
mod ledger;
mod lifecycle;
mod margins;
mod money;
mod ops;
mod ops_page;
mod outage;
mod outbound;
mod portal;
mod providers;
mod queue;
mod reliability;
mod schema;
mod stripe;
mod supabase;
mod tenancy;
mod tools;
mod transfer;
mod vapi_schema;
mod webhook;
mod worker;
mod writer;
