//! Stripe's REST API, the parts invoicing needs: customers, invoice items, invoices (create,
//! finalize, send) and searching them by our ids. Plain `reqwest` with typed requests: the
//! `async-stripe` crate generates every resource of the API (minutes of build time and megabytes
//! of binary on this two-core machine) for the eight calls we make.
//!
//! Bodies are `application/x-www-form-urlencoded` with nested keys (`metadata[agent_id]`); every
//! POST carries an `Idempotency-Key` the caller derives from our ids. Errors are classified like
//! every provider's ([`super::classify_status`]): 429 (with `Retry-After`), 5xx and network
//! errors are transient; other 4xx are permanent with Stripe's own message.

use std::collections::HashMap;

use reqwest::Method;
use serde::{Deserialize, de::DeserializeOwned};

use super::{CircuitBreaker, ProviderError, classify_status, exchange};
use crate::config::Secret;

pub const PROVIDER: &str = "stripe";

/// The API version every request asks for, so Stripe's answers keep the shapes read here.
pub const API_VERSION: &str = "2024-06-20";

/// Largest answer read (a list of 100 invoice items is well under it).
const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct StripeClient {
    base_url: String,
    api_key: Secret,
    http: reqwest::Client,
    breaker: CircuitBreaker,
}

/// A customer (`cus_...`); `deleted` on one Stripe has deleted.
#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub deleted: bool,
}

/// An invoice item (`ii_...`) and our ids in its metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceItem {
    pub id: String,
    pub amount: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: HashMap<String, String>,
}

/// An invoice (`in_...`). `status`: draft, open, paid, uncollectible or void.
#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub status: Option<String>,
    pub amount_due: i64,
    pub number: Option<String>,
    pub hosted_invoice_url: Option<String>,
    /// Unix seconds.
    pub due_date: Option<i64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: HashMap<String, String>,
    pub status_transitions: Option<StatusTransitions>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusTransitions {
    /// Unix seconds.
    pub paid_at: Option<i64>,
}

/// Stripe types `metadata` as an object or `null`: `null` reads as empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<HashMap<String, String>, D::Error> {
    Ok(Option::<HashMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
struct List<T> {
    data: Vec<T>,
}

/// A form body: ordered pairs with Stripe's nested keys (`metadata[invoice_id]`).
#[derive(Debug, Default, Clone)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.0.push((key.to_string(), value.to_string()));
        self
    }

    /// The pairs, as sent.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

impl StripeClient {
    /// `base_url` like `https://api.stripe.com`.
    pub fn new(
        base_url: String,
        api_key: Secret,
        http: reqwest::Client,
        breaker: CircuitBreaker,
    ) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            http,
            breaker,
        }
    }

    /// The first object of `resource` (`customers`, `invoices`) whose `metadata[key]` is
    /// `value` (`GET /v1/{resource}/search`): finds one made by an attempt that stopped before
    /// storing its id.
    async fn search<T: DeserializeOwned>(
        &self,
        resource: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<T>, ProviderError> {
        let query = format!("metadata['{key}']:'{}'", quote(value));
        let path = format!("/v1/{resource}/search");
        let list: List<T> = self
            .call(Method::GET, &path, &[("query", query)], None, None)
            .await?;
        Ok(list.data)
    }

    /// The live customer whose `metadata[agent_id]` is `agent_id`, if Stripe has one.
    pub async fn find_customer(&self, agent_id: &str) -> Result<Option<Customer>, ProviderError> {
        let found: Vec<Customer> = self.search("customers", "agent_id", agent_id).await?;
        Ok(found.into_iter().find(|c| !c.deleted))
    }

    /// `POST /v1/customers`.
    pub async fn create_customer(&self, form: &Form, key: &str) -> Result<Customer, ProviderError> {
        self.call(Method::POST, "/v1/customers", &[], Some(form), Some(key))
            .await
    }

    /// The invoice whose `metadata[invoice_id]` is `invoice_id`, if any.
    pub async fn find_invoice(&self, invoice_id: &str) -> Result<Option<Invoice>, ProviderError> {
        let found: Vec<Invoice> = self.search("invoices", "invoice_id", invoice_id).await?;
        Ok(found.into_iter().next())
    }

    /// `GET /v1/invoices/{id}`.
    pub async fn invoice(&self, id: &str) -> Result<Invoice, ProviderError> {
        self.call(
            Method::GET,
            &format!("/v1/invoices/{}", path(id)?),
            &[],
            None,
            None,
        )
        .await
    }

    /// `POST /v1/invoices`.
    pub async fn create_invoice(&self, form: &Form, key: &str) -> Result<Invoice, ProviderError> {
        self.call(Method::POST, "/v1/invoices", &[], Some(form), Some(key))
            .await
    }

    /// The items on invoice `id` (`GET /v1/invoiceitems?invoice=`, up to 100: our invoices
    /// have a handful of lines).
    pub async fn invoice_items(&self, id: &str) -> Result<Vec<InvoiceItem>, ProviderError> {
        let query = [("invoice", id.to_string()), ("limit", "100".to_string())];
        let list: List<InvoiceItem> = self
            .call(Method::GET, "/v1/invoiceitems", &query, None, None)
            .await?;
        Ok(list.data)
    }

    /// `POST /v1/invoiceitems`.
    pub async fn create_invoice_item(
        &self,
        form: &Form,
        key: &str,
    ) -> Result<InvoiceItem, ProviderError> {
        self.call(Method::POST, "/v1/invoiceitems", &[], Some(form), Some(key))
            .await
    }

    /// `POST /v1/invoices/{id}/{action}` (`finalize`, `send`).
    pub async fn invoice_action(
        &self,
        id: &str,
        action: &str,
        form: &Form,
        key: &str,
    ) -> Result<Invoice, ProviderError> {
        let path = format!("/v1/invoices/{}/{action}", path(id)?);
        self.call(Method::POST, &path, &[], Some(form), Some(key))
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        form: Option<&Form>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ProviderError> {
        self.breaker.check()?;
        let result = async {
            let mut request = self
                .http
                .request(method, format!("{}{path}", self.base_url))
                .bearer_auth(self.api_key.expose())
                .header("Stripe-Version", API_VERSION)
                .query(query);
            if let Some(form) = form {
                request = request.form(form.pairs());
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let (status, headers, body) = exchange(PROVIDER, request, MAX_BODY_BYTES).await?;
            if !status.is_success() {
                return Err(classify_status(PROVIDER, status, &headers, &message(&body)));
            }
            serde_json::from_slice(&body)
                .map_err(|e| ProviderError::permanent(PROVIDER, format!("malformed response: {e}")))
        }
        .await;
        self.breaker.record(&result);
        result
    }
}

/// Stripe's own words for a failure (`error.message`, with its type and code), else the body.
fn message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => [error.kind, error.code, error.message]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": "),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// An id as one path segment: Stripe's ids are `[A-Za-z0-9_]`; anything else is refused.
fn path(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(ProviderError::permanent(PROVIDER, "malformed Stripe id"))
    }
}

/// A value inside a search query's single quotes.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_error_message_is_the_reason() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "resource_missing",
                        "message": "No such customer: 'cus_x'", "param": "customer"}}"#;
        assert_eq!(
            message(body),
            "invalid_request_error: resource_missing: No such customer: 'cus_x'"
        );
        assert_eq!(message(b"<html>"), "<html>");
    }

    #[test]
    fn null_metadata_reads_as_empty() {
        let item: InvoiceItem =
            serde_json::from_str(r#"{"id": "ii_1", "amount": -500, "metadata": null}"#)
                .expect("item");
        assert!(item.metadata.is_empty());
        assert_eq!(item.amount, -500);
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert!(path("in_1MtHbELkdIwHu7ixl4OzzPMv").is_ok());
        for bad in ["", "in_1/../x", "in 1", "in_1?x=1", "in_1%2F"] {
            assert!(path(bad).is_err(), "{bad}");
        }
        assert_eq!(quote("a'b\\c"), "a\\'b\\\\c");
    }
}
