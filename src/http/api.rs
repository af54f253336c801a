//! The JSON admin API under `/api/`:
//!
//! | request | does |
//! |---|---|
//! | `GET /api/broker` | version, uptime, listeners, limits, counts and totals |
//! | `GET /api/clients?limit=N` | sessions (connected and offline) with queue depth, by client id |
//! | `GET /api/clients/{id}` | one session |
//! | `GET /api/clients/{id}/subscriptions` | its subscriptions |
//! | `POST /api/clients/{id}/kick` | closes its connection (5.0: DISCONNECT 0x98) |
//! | `GET /api/retained?filter=F&limit=N` | retained messages matching a filter (default `#`) |
//! | `DELETE /api/retained?filter=F` | deletes them (from the store too); nothing is delivered |
//! | `POST /api/publish` | `{"topic", "payload" or "payload_base64", "qos", "retain"}` |
//!
//! Client ids in paths are percent-encoded (`/` as `%2F`).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::{Reply, State, json as reply, not_found, percent_decode, query_param};
use crate::broker::{Control, SessionSlot};
use crate::codec::{PublishProperties, QoS, ReasonCode};
use crate::message::Message;
use crate::metrics::{Gauges, protocol_label};
use crate::topic::{TopicFilter, TopicName};

/// Entries a list returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 1000;

pub(super) async fn handle(
    state: &State,
    method: &Method,
    path: &str,
    query: &str,
    body: &Bytes,
) -> Reply {
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(DEFAULT_LIMIT);
    match (method, path) {
        (&Method::GET, "/api/broker") => reply(StatusCode::OK, &broker_info(state)),
        (&Method::GET, "/api/clients") => reply(StatusCode::OK, &clients(state, limit)),
        (&Method::GET, "/api/retained") => retained(state, query, limit),
        (&Method::DELETE, "/api/retained") => delete_retained(state, query),
        (&Method::POST, "/api/publish") => publish(state, body).await,
        _ => match path.strip_prefix("/api/clients/") {
            Some(rest) => client_route(state, method, rest),
            None => not_found(),
        },
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    reply(status, &json!({ "error": message.to_string() }))
}

fn broker_info(state: &State) -> Value {
    let broker = &state.broker;
    let gauges = Gauges::read(broker);
    let totals = broker.metrics().totals();
    let config = &state.info.config;
    json!({
        "name": "starling",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.info.started.elapsed().as_secs(),
        "listeners": state.info.listeners.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "sys_interval": config.sys_interval,
        "storage": if config.data_dir.is_some() { json!(config.storage.backend) } else { json!("memory") },
        "store_healthy": broker.store_fault().is_none(),
        "limits": &**broker.limits(),
        "connections": totals.connections_open,
        "sessions": { "online": gauges.online, "offline": gauges.sessions - gauges.online },
        "subscriptions": gauges.subscriptions,
        "retained_messages": gauges.retained,
        "queued": { "messages": gauges.queued_messages, "bytes": gauges.queued_bytes },
        "inflight_messages": gauges.inflight,
        "totals": {
            "messages_received": totals.messages_received,
            "messages_sent": totals.messages_sent,
            "payload_bytes_received": totals.payload_received,
            "payload_bytes_sent": totals.payload_sent,
            "dropped": totals.dropped,
            "connections": totals.connections,
        },
    })
}

/// One session as the API shows it.
fn client_json(slot: &SessionSlot) -> Value {
    let (queued, queued_bytes) = slot.queue_depth();
    let mut value = json!({
        "client_id": &*slot.client_id,
        "online": slot.is_online(),
        "queued": queued,
        "queued_bytes": queued_bytes,
        "inflight": slot.inflight(),
    });
    if let Some(client) = slot.client() {
        value["connection"] = json!({
            "peer": client.peer.to_string(),
            "protocol": protocol_label(client.protocol),
            "username": client.username.as_deref(),
            "keep_alive": client.keep_alive,
            "connected_at": client.connected_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
    }
    value
}

fn clients(state: &State, limit: usize) -> Value {
    let mut sessions = state.broker.sessions();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let total = sessions.len();
    let listed: Vec<Value> = sessions
        .iter()
        .take(limit)
        .map(|slot| client_json(slot))
        .collect();
    json!({ "total": total, "clients": listed })
}

fn client_route(state: &State, method: &Method, rest: &str) -> Reply {
    let (id, action) = match rest.rsplit_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    let Some(client_id) = percent_decode(id, false) else {
        return error(
            StatusCode::BAD_REQUEST,
            "client id is not valid percent-encoded UTF-8",
        );
    };
    let Some(slot) = state.broker.session(&client_id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no session for client {client_id:?}"),
        );
    };
    match (method, action) {
        (&Method::GET, None) => reply(StatusCode::OK, &client_json(&slot)),
        (&Method::GET, Some("subscriptions")) => subscriptions(state, &slot),
        (&Method::POST, Some("kick")) => kick(&slot),
        _ => not_found(),
    }
}

fn subscriptions(state: &State, slot: &Arc<SessionSlot>) -> Reply {
    let subscriptions: Vec<Value> = state
        .broker
        .subscriptions_of(slot)
        .into_iter()
        .map(|s| {
            json!({
                "filter": s.filter.as_str(),
                "qos": s.options.qos as u8,
                "no_local": s.options.no_local,
                "retain_as_published": s.options.retain_as_published,
                "subscription_id": s.id.map(|id| id.get()),
            })
        })
        .collect();
    reply(
        StatusCode::OK,
        &json!({ "client_id": &*slot.client_id, "subscriptions": subscriptions }),
    )
}

fn kick(slot: &SessionSlot) -> Reply {
    match slot.request(Control::Close(ReasonCode::AdministrativeAction)) {
        Ok(()) => {
            info!("Client {} kicked through the admin API.", slot.client_id);
            reply(
                StatusCode::ACCEPTED,
                &json!({ "client_id": &*slot.client_id, "kicked": true }),
            )
        }
        Err(_) => error(
            StatusCode::CONFLICT,
            format!("client {:?} is not connected", slot.client_id),
        ),
    }
}

fn filter_param(query: &str) -> Result<TopicFilter, Box<Reply>> {
    let text = query_param(query, "filter").unwrap_or_else(|| "#".to_owned());
    TopicFilter::new(&text).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("filter {text:?}: {e}"),
        ))
    })
}

fn payload_json(payload: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(payload) {
        Ok(text) => ("payload", json!(text)),
        Err(_) => ("payload_base64", json!(BASE64.encode(payload))),
    }
}

fn retained(state: &State, query: &str, limit: usize) -> Reply {
    let filter = match filter_param(query) {
        Ok(filter) => filter,
        Err(reply) => return *reply,
    };
    let now = tokio::time::Instant::now().into_std();
    let mut messages = state.broker.retained_matching(&filter, now);
    messages.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
    let total = messages.len();
    let listed: Vec<Value> = messages
        .iter()
        .take(limit)
        .map(|m| {
            let (key, payload) = payload_json(&m.payload);
            let mut value = json!({
                "topic": m.topic.as_str(),
                "qos": m.qos as u8,
                "bytes": m.payload.len(),
            });
            value[key] = payload;
            value
        })
        .collect();
    reply(
        StatusCode::OK,
        &json!({ "filter": filter.as_str(), "total": total, "messages": listed }),
    )
}

fn delete_retained(state: &State, query: &str) -> Reply {
    let filter = match filter_param(query) {
        Ok(filter) => filter,
        Err(reply) => return *reply,
    };
    let now = tokio::time::Instant::now().into_std();
    let mut deleted = 0;
    for message in state.broker.retained_matching(&filter, now) {
        if state.broker.delete_retained(&message.topic) {
            deleted += 1;
        }
    }
    info!(
        "Deleted {deleted} retained messages matching {} through the admin API.",
        filter.as_str()
    );
    reply(
        StatusCode::OK,
        &json!({ "filter": filter.as_str(), "deleted": deleted }),
    )
}

/// The body of `POST /api/publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

async fn publish(state: &State, body: &Bytes) -> Reply {
    let request: PublishRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };
    let topic = match TopicName::new(&request.topic) {
        Ok(topic) => topic,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("topic {:?}: {e}", request.topic),
            );
        }
    };
    let payload = match (request.payload, request.payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => match BASE64.decode(encoded) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("payload_base64: {e}")),
        },
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give payload or payload_base64, not both",
            );
        }
    };
    let qos = match request.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("qos {other}: must be 0, 1 or 2"),
            );
        }
    };
    let now: Instant = tokio::time::Instant::now().into_std();
    let bytes = payload.len();
    let message = Arc::new(Message {
        topic: topic.clone(),
        payload,
        qos,
        retain: request.retain,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
        published_at: Some(now),
    });
    let ticket = state.broker.route(message);
    // In `sync = "always"` mode, answer once what was published is durable, as for a client.
    let stored = std::future::poll_fn(|cx| state.broker.poll_settled(cx, ticket)).await;
    if stored.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not record the message",
        );
    }
    reply(
        StatusCode::OK,
        &json!({
            "topic": topic.as_str(), "qos": qos as u8, "retain": request.retain, "bytes": bytes,
        }),
    )
}
