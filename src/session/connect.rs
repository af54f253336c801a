//! CONNECT negotiation: what a client asked for, what the broker grants, and the CONNACK that says
//! so. Pure: the caller supplies the limits and, for clients without an id, a fresh id.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::{ConnAck, ConnAckProperties, Connect, ProtocolVersion, ReasonCode, Will};
use crate::config::Limits;

use super::Link;

/// Session Expiry Interval meaning "never expires" (section 3.1.2.11.2).
pub const EXPIRY_NEVER: u32 = u32::MAX;

/// A CONNECT the broker accepts, reduced to what the session needs.
#[derive(Debug)]
pub struct Negotiated {
    pub client_id: Arc<str>,
    /// True when the client sent an empty id and the broker made one up.
    pub assigned_client_id: bool,
    pub clean_start: bool,
    /// Seconds the session outlives the connection; [`EXPIRY_NEVER`] for ever.
    pub expiry_interval: u32,
    pub will: Option<Will>,
    pub link: Link,
    /// Set when the broker overrides the client's keep alive (5.0 Server Keep Alive).
    pub server_keep_alive: Option<u16>,
}

/// Checks a CONNECT against the limits. On refusal, returns the CONNACK to send before closing.
///
/// `assign_id` is called only for an empty client id that may be replaced.
pub fn negotiate(
    connect: Connect,
    limits: &Limits,
    now: Instant,
    assign_id: impl FnOnce() -> String,
) -> Result<Negotiated, Box<ConnAck>> {
    let version = connect.protocol;
    let refuse = |reason: ReasonCode, why: &str| Box::new(refusal(version, reason, why, &connect));

    // An auth method names enhanced authentication; this broker implements none (section 4.12).
    if connect.properties.authentication_method.is_some() {
        return Err(refuse(
            ReasonCode::BadAuthenticationMethod,
            "no enhanced authentication method is supported",
        ));
    }

    let (client_id, assigned) = if connect.client_id.is_empty() {
        // [MQTT-3.1.3-8] a 3.1.1 client with an empty id must ask for a clean session; 3.1 has no
        // empty ids at all.
        let allowed = limits.allow_zero_length_clientid
            && match version {
                ProtocolVersion::V31 => false,
                ProtocolVersion::V311 => connect.clean_start,
                ProtocolVersion::V5 => true,
            };
        if !allowed {
            return Err(refuse(
                ReasonCode::ClientIdentifierNotValid,
                "an empty client identifier is not allowed here",
            ));
        }
        (Arc::<str>::from(assign_id()), true)
    } else {
        (Arc::<str>::from(connect.client_id.as_str()), false)
    };

    let (keep_alive, server_keep_alive) =
        match negotiate_keep_alive(version, connect.keep_alive, limits.max_keepalive) {
            Some(values) => values,
            None => {
                return Err(refuse(
                    ReasonCode::ClientIdentifierNotValid,
                    "keep alive above the broker's max_keepalive",
                ));
            }
        };

    if connect.will.as_ref().is_some_and(|will| will.retain) && !limits.retain_available {
        return Err(refuse(
            ReasonCode::RetainNotSupported,
            "retained will messages are not available",
        ));
    }

    let expiry_interval = match version {
        ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        _ if connect.clean_start => 0,
        _ if limits.persistent_client_expiration == 0 => EXPIRY_NEVER,
        _ => limits.persistent_client_expiration,
    };

    let props = &connect.properties;
    let link = Link {
        version,
        keep_alive,
        receive_maximum: props
            .receive_maximum
            .map_or(u16::MAX, NonZeroU16::get)
            .min(limits.inflight_window()),
        max_packet_size: props
            .maximum_packet_size
            .map_or(crate::codec::MAX_PACKET_SIZE, |m| m.get()),
        topic_alias_maximum: props.topic_alias_maximum.unwrap_or(0),
        request_problem_information: props.request_problem_information.unwrap_or(true),
        last_received: now,
        ..Link::new(version, now)
    };

    Ok(Negotiated {
        client_id,
        assigned_client_id: assigned,
        clean_start: connect.clean_start,
        expiry_interval,
        will: connect.will,
        link,
        server_keep_alive,
    })
}

/// Applies `max_keepalive`: returns (keep alive to enforce, Server Keep Alive to announce), or
/// `None` when a 3.1/3.1.1 client must be refused because it cannot be told a different value.
///
/// A 5.0 client asking for more than the maximum, or for none (0), is told the maximum. A
/// 3.1/3.1.1 client asking for more is refused; one asking for 0 is accepted without keep alive,
/// since refusing it is nowhere required and would lock out clients that cannot send pings.
fn negotiate_keep_alive(
    version: ProtocolVersion,
    requested: u16,
    max: u16,
) -> Option<(u16, Option<u16>)> {
    match version {
        ProtocolVersion::V5 if requested > max || (requested == 0 && max < u16::MAX) => {
            Some((max, Some(max)))
        }
        ProtocolVersion::V5 => Some((requested, None)),
        _ if requested > max => None,
        _ => Some((requested, None)),
    }
}

fn refusal(version: ProtocolVersion, reason: ReasonCode, why: &str, connect: &Connect) -> ConnAck {
    let mut properties = ConnAckProperties::default();
    if version.is_v5() && connect.properties.request_problem_information != Some(false) {
        properties.reason_string = Some(why.to_owned());
    }
    ConnAck {
        session_present: false,
        reason,
        properties,
    }
}

/// The CONNACK for an accepted connection, announcing the broker's limits to 5.0 clients.
pub fn connack(negotiated: &Negotiated, session_present: bool, limits: &Limits) -> ConnAck {
    let mut properties = ConnAckProperties::default();
    if negotiated.link.version.is_v5() {
        let window = limits.inflight_window();
        if window != u16::MAX {
            properties.receive_maximum = NonZeroU16::new(window);
        }
        if limits.max_packet_size != 0 {
            properties.maximum_packet_size = std::num::NonZeroU32::new(limits.max_packet_size);
        }
        if limits.max_topic_alias != 0 {
            properties.topic_alias_maximum = Some(limits.max_topic_alias);
        }
        if !limits.retain_available {
            properties.retain_available = Some(false);
        }
        if negotiated.assigned_client_id {
            properties.assigned_client_identifier = Some(negotiated.client_id.to_string());
        }
        properties.server_keep_alive = negotiated.server_keep_alive;
    }
    ConnAck {
        // [MQTT-3.2.2-2] session present is 0 when clean start is set.
        session_present: session_present && !negotiated.clean_start,
        reason: ReasonCode::Success,
        properties,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::codec::ConnectProperties;

    fn connect(version: ProtocolVersion, client_id: &str, clean: bool, keep_alive: u16) -> Connect {
        Connect {
            protocol: version,
            clean_start: clean,
            keep_alive,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    fn accept(c: Connect, limits: &Limits) -> Result<Negotiated, Box<ConnAck>> {
        negotiate(c, limits, Instant::now(), || "auto-1".to_owned())
    }

    #[test]
    fn empty_client_id_rules_per_version() {
        let limits = Limits::default();
        let v311_clean = accept(connect(ProtocolVersion::V311, "", true, 60), &limits)
            .expect("3.1.1 clean session may omit the id");
        assert_eq!(&*v311_clean.client_id, "auto-1");
        let refused = accept(connect(ProtocolVersion::V311, "", false, 60), &limits)
            .expect_err("3.1.1 persistent session needs an id");
        assert_eq!(refused.reason, ReasonCode::ClientIdentifierNotValid);
        assert_eq!(refused.reason.to_v3_connack(), 2);
        let refused = accept(connect(ProtocolVersion::V31, "", true, 60), &limits)
            .expect_err("3.1 needs an id");
        assert_eq!(refused.reason, ReasonCode::ClientIdentifierNotValid);
        let v5 = accept(connect(ProtocolVersion::V5, "", false, 60), &limits).expect("5.0 assigns");
        assert!(v5.assigned_client_id);
        let ack = connack(&v5, false, &limits);
        assert_eq!(
            ack.properties.assigned_client_identifier.as_deref(),
            Some("auto-1")
        );

        let strict = Limits {
            allow_zero_length_clientid: false,
            ..Limits::default()
        };
        assert!(accept(connect(ProtocolVersion::V5, "", true, 60), &strict).is_err());
    }

    #[test]
    fn keep_alive_above_the_maximum_is_lowered_for_v5_and_refused_for_v3() {
        let limits = Limits {
            max_keepalive: 60,
            ..Limits::default()
        };
        let v5 = accept(connect(ProtocolVersion::V5, "a", true, 120), &limits).expect("accepted");
        assert_eq!(v5.link.keep_alive, 60);
        assert_eq!(
            connack(&v5, false, &limits).properties.server_keep_alive,
            Some(60)
        );
        let v5_zero = accept(connect(ProtocolVersion::V5, "a", true, 0), &limits).expect("ok");
        assert_eq!(v5_zero.server_keep_alive, Some(60));
        let v3 = accept(connect(ProtocolVersion::V311, "a", true, 120), &limits)
            .expect_err("3.1.1 cannot be told a new keep alive");
        assert_eq!(v3.reason.to_v3_connack(), 2);
        let within = accept(connect(ProtocolVersion::V311, "a", true, 30), &limits).expect("ok");
        assert_eq!(within.link.keep_alive, 30);
        let v3_zero = accept(connect(ProtocolVersion::V311, "a", true, 0), &limits)
            .expect("3.1.1 without keep alive is accepted");
        assert_eq!(v3_zero.link.keep_alive, 0);
        let default = accept(
            connect(ProtocolVersion::V311, "a", true, 0),
            &Limits::default(),
        )
        .expect("keep alive 0 is fine by default");
        assert_eq!(default.link.keep_alive, 0);
    }

    #[test]
    fn session_expiry_per_version() {
        let limits = Limits::default();
        let mut c = connect(ProtocolVersion::V5, "a", false, 0);
        c.properties.session_expiry_interval = Some(30);
        assert_eq!(accept(c, &limits).expect("ok").expiry_interval, 30);
        let v5_default = accept(connect(ProtocolVersion::V5, "a", false, 0), &limits).expect("ok");
        assert_eq!(v5_default.expiry_interval, 0, "absent means 0");
        let v3_persistent =
            accept(connect(ProtocolVersion::V311, "a", false, 0), &limits).expect("ok");
        assert_eq!(v3_persistent.expiry_interval, EXPIRY_NEVER);
        let v3_clean = accept(connect(ProtocolVersion::V311, "a", true, 0), &limits).expect("ok");
        assert_eq!(v3_clean.expiry_interval, 0);
        let bounded = Limits {
            persistent_client_expiration: 3600,
            ..Limits::default()
        };
        let v3_bounded =
            accept(connect(ProtocolVersion::V311, "a", false, 0), &bounded).expect("ok");
        assert_eq!(v3_bounded.expiry_interval, 3600);
    }

    #[test]
    fn client_limits_shape_the_link_and_ours_the_connack() {
        let limits = Limits::default();
        let mut c = connect(ProtocolVersion::V5, "a", true, 10);
        c.properties.receive_maximum = NonZeroU16::new(5);
        c.properties.maximum_packet_size = NonZeroU32::new(128);
        c.properties.topic_alias_maximum = Some(3);
        let n = accept(c, &limits).expect("ok");
        assert_eq!(n.link.receive_maximum, 5);
        assert_eq!(n.link.max_packet_size, 128);
        assert_eq!(n.link.topic_alias_maximum, 3);
        let ack = connack(&n, true, &limits);
        assert!(
            !ack.session_present,
            "clean start never has a session present"
        );
        assert_eq!(ack.properties.receive_maximum, NonZeroU16::new(20));
        assert_eq!(ack.properties.topic_alias_maximum, Some(10));
        assert_eq!(
            ack.properties.maximum_packet_size, None,
            "no limit configured"
        );

        let big_window = accept(connect(ProtocolVersion::V5, "a", true, 10), &limits).expect("ok");
        assert_eq!(
            big_window.link.receive_maximum, 20,
            "capped by max_inflight_messages"
        );
    }

    #[test]
    fn an_authentication_method_is_refused_cleanly() {
        let mut c = connect(ProtocolVersion::V5, "a", true, 10);
        c.properties.authentication_method = Some("SCRAM-SHA-1".into());
        let ack = accept(c, &Limits::default()).expect_err("no methods");
        assert_eq!(ack.reason, ReasonCode::BadAuthenticationMethod);
        assert!(ack.properties.reason_string.is_some());
    }
}
