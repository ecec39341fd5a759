//! A stateful Stripe stand-in over real HTTP: customers, invoice items, invoices (create,
//! finalize, send), their searches by metadata, and idempotency keys, answering with Stripe's
//! published example objects (`tests/fixtures/stripe/*.json`, from `stripe/openapi`'s
//! fixtures) with the fields the calls set. Unknown parameters are refused as Stripe refuses
//! them; faults can be queued per route.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub key: Option<String>,
    pub form: Vec<(String, String)>,
}

/// What the stand-in holds: Stripe's objects as it answered them, and every request.
#[derive(Default)]
pub struct Books {
    /// Per route (`create_invoice`, `finalize`, ...): statuses to answer before doing anything.
    pub faults: HashMap<&'static str, VecDeque<u16>>,
    pub customers: Vec<Value>,
    /// Each with `status` (draft, open), `amount_due` (the sum of its items) and `metadata`.
    pub invoices: Vec<Value>,
    pub items: Vec<Value>,
    /// Answers by idempotency key, with the parameters they were first asked with.
    keys: HashMap<String, (Vec<(String, String)>, Value)>,
    /// Every request, in the order they came.
    pub seen: Vec<Seen>,
    serial: u64,
}

impl Books {
    fn next_id(&mut self, prefix: &str) -> String {
        self.serial += 1;
        format!("{prefix}_standin{:06}", self.serial)
    }

    pub fn posts(&self, path_end: &str) -> usize {
        self.seen
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with(path_end))
            .count()
    }
}

pub struct StripeStandIn {
    pub url: String,
    pub books: Arc<Mutex<Books>>,
    _task: tokio::task::JoinHandle<()>,
}

impl StripeStandIn {
    pub async fn start() -> StripeStandIn {
        let books = Arc::new(Mutex::new(Books::default()));
        let app = Router::new().fallback(handle).with_state(books.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        StripeStandIn {
            url,
            books,
            _task: task,
        }
    }

    pub fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().expect("books")
    }

    /// Answers `status` the next time `route` is called (before doing anything).
    pub fn fail(&self, route: &'static str, status: u16) {
        self.books()
            .faults
            .entry(route)
            .or_default()
            .push_back(status);
    }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// The parameters each POST route knows (Stripe's API reference; `metadata[...]` everywhere).
fn known(route: &str) -> &'static [&'static str] {
    match route {
        "create_customer" => &["email", "name", "description"],
        "create_invoice" => &[
            "customer",
            "collection_method",
            "days_until_due",
            "auto_advance",
            "currency",
            "pending_invoice_items_behavior",
            "description",
        ],
        "create_item" => &["customer", "invoice", "amount", "currency", "description"],
        "finalize" => &["auto_advance"],
        _ => &[],
    }
}

fn metadata(form: &[(String, String)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in form {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            m.insert(key.to_string(), json!(v));
        }
    }
    Value::Object(m)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `metadata['name']:'value'` -> (name, value).
fn search_term(query: &str) -> Option<(String, String)> {
    let rest = query.strip_prefix("metadata['")?;
    let (name, rest) = rest.split_once("']:'")?;
    Some((name.to_string(), rest.strip_suffix('\'')?.to_string()))
}

fn list(data: Vec<Value>) -> Response {
    axum::Json(json!({"object": "list", "data": data, "has_more": false})).into_response()
}

async fn handle(
    State(books): State<Arc<Mutex<Books>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = uri.path().to_string();
    let mut b = books.lock().expect("books");
    b.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        key: key.clone(),
        form: form.clone(),
    });
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk_test_standin")
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = match (method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "customers", "search"]) => "search_customers",
        ("GET", ["v1", "customers", _]) => "customer",
        ("POST", ["v1", "customers"]) => "create_customer",
        ("GET", ["v1", "invoices", "search"]) => "search_invoices",
        ("GET", ["v1", "invoices", _]) => "invoice",
        ("POST", ["v1", "invoices"]) => "create_invoice",
        ("POST", ["v1", "invoices", _, "finalize"]) => "finalize",
        ("POST", ["v1", "invoices", _, "send"]) => "send",
        ("GET", ["v1", "invoiceitems"]) => "items",
        ("POST", ["v1", "invoiceitems"]) => "create_item",
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "Unrecognized request URL",
            );
        }
    };
    if let Some(status) = b.faults.get_mut(route).and_then(VecDeque::pop_front) {
        let status = StatusCode::from_u16(status).expect("status");
        let mut response = error(status, "api_error", "the stand-in was told to fail");
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", "1".parse().expect("header"));
        }
        return response;
    }
    if method == Method::POST {
        if let Some(unknown) = form
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !k.starts_with("metadata[") && !known(route).contains(k))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Received unknown parameter: {unknown}"),
            );
        }
        if let Some((params, answer)) = key.as_ref().and_then(|k| b.keys.get(k)) {
            if *params != form {
                return error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                );
            }
            let mut response = axum::Json(answer.clone()).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().expect("header"));
            return response;
        }
    }
    let answer = match route {
        "search_customers" | "search_invoices" => {
            let Some((name, value)) = query.get("query").and_then(|q| search_term(q)) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "bad query",
                );
            };
            let pool = if route == "search_customers" {
                &b.customers
            } else {
                &b.invoices
            };
            return list(
                pool.iter()
                    .filter(|o| o["metadata"][&name] == json!(value))
                    .cloned()
                    .collect(),
            );
        }
        "items" => {
            let invoice = query.get("invoice").cloned().unwrap_or_default();
            return list(
                b.items
                    .iter()
                    .filter(|i| i["invoice"] == json!(invoice))
                    .cloned()
                    .collect(),
            );
        }
        "customer" | "invoice" => {
            let pool = if route == "customer" {
                &b.customers
            } else {
                &b.invoices
            };
            match pool.iter().find(|o| o["id"] == json!(segments[2])) {
                Some(o) => return axum::Json(o.clone()).into_response(),
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        "No such object",
                    );
                }
            }
        }
        "create_customer" => {
            let mut c = fixture("customer");
            c["id"] = json!(b.next_id("cus"));
            c["email"] = json!(field(&form, "email"));
            c["name"] = json!(field(&form, "name"));
            c["metadata"] = metadata(&form);
            b.customers.push(c.clone());
            c
        }
        "create_invoice" => {
            let customer = field(&form, "customer").unwrap_or_default().to_string();
            if !b.customers.iter().any(|c| c["id"] == json!(customer)) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "No such customer",
                );
            }
            let mut i = fixture("invoice");
            let id = b.next_id("in");
            i["id"] = json!(id);
            i["customer"] = json!(customer);
            i["status"] = json!("draft");
            i["amount_due"] = json!(0);
            i["total"] = json!(0);
            i["number"] = Value::Null;
            i["hosted_invoice_url"] = Value::Null;
            i["collection_method"] = json!(field(&form, "collection_method"));
            i["metadata"] = metadata(&form);
            i["lines"] = json!({"object": "list", "data": [], "has_more": false});
            i["status_transitions"] = json!({"finalized_at": null, "paid_at": null, "voided_at": null,
                       "marked_uncollectible_at": null});
            b.invoices.push(i.clone());
            i
        }
        "create_item" => {
            let invoice = field(&form, "invoice").unwrap_or_default().to_string();
            let amount: i64 = field(&form, "amount")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let Some(pos) = b.invoices.iter().position(|i| i["id"] == json!(invoice)) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "No such invoice",
                );
            };
            if b.invoices[pos]["status"] != json!("draft") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "Invoice is not a draft",
                );
            }
            let mut item = fixture("invoiceitem");
            item["id"] = json!(b.next_id("ii"));
            item["invoice"] = json!(invoice);
            item["amount"] = json!(amount);
            item["customer"] = json!(field(&form, "customer"));
            item["description"] = json!(field(&form, "description"));
            item["metadata"] = metadata(&form);
            b.items.push(item.clone());
            let due = b.invoices[pos]["amount_due"].as_i64().unwrap_or(0) + amount;
            b.invoices[pos]["amount_due"] = json!(due);
            b.invoices[pos]["total"] = json!(due);
            item
        }
        "finalize" | "send" => {
            let Some(pos) = b
                .invoices
                .iter()
                .position(|i| i["id"] == json!(segments[2]))
            else {
                return error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "No such invoice",
                );
            };
            let want = if route == "finalize" { "draft" } else { "open" };
            if b.invoices[pos]["status"] != json!(want) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("This invoice is not {want}"),
                );
            }
            if route == "finalize" {
                let id = segments[2].to_string();
                let n = b
                    .invoices
                    .iter()
                    .filter(|i| i["number"].is_string())
                    .count()
                    + 1;
                let inv = &mut b.invoices[pos];
                inv["status"] = json!("open");
                inv["number"] = json!(format!("AM-{n:04}"));
                inv["hosted_invoice_url"] = json!(format!("https://invoice.stripe.com/i/{id}"));
                inv["due_date"] = json!(1_900_000_000);
            }
            b.invoices[pos].clone()
        }
        _ => unreachable!("every route answers above"),
    };
    if let Some(k) = key {
        b.keys.insert(k, (form, answer.clone()));
    }
    axum::Json(answer).into_response()
}
