//! Why did a login fail? ipmi-rs 0.6 cannot say: it reads the RAKP message 2
//! status code from byte 2 (a reserved byte) instead of byte 1, so every refusal
//! surfaces as a failed check of the BMC's key exchange code, exactly like a
//! wrong password. This probe runs the unauthenticated start of an RMCP+ login
//! (Open Session, RAKP 1) itself and reads the status the BMC gave. It never
//! sends a password or anything derived from one, and abandons each half-open
//! session with a failed RAKP 3 so the BMC frees its slot at once.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// The answer to "the login failed: why?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Diagnosis {
    /// The BMC does not know the user name at all.
    NoSuchUser,
    /// The user exists, but not with administrator privilege (what ipmi-rs asks).
    BelowAdministrator,
    /// The BMC accepted user and role; only the password can be wrong.
    UserAccepted,
    /// The probe itself got no clear answer.
    Unknown(String),
}

const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
const AUTH_RMCP_PLUS: u8 = 0x06;
const PAYLOAD_OPEN_SESSION_REQUEST: u8 = 0x10;
const PAYLOAD_OPEN_SESSION_RESPONSE: u8 = 0x11;
const PAYLOAD_RAKP1: u8 = 0x12;
const PAYLOAD_RAKP2: u8 = 0x13;
const PAYLOAD_RAKP3: u8 = 0x14;
const ROLE_ADMINISTRATOR: u8 = 0x04;
/// RAKP 1 role bit: look the user up by name alone, whatever its privilege.
const NAME_ONLY_LOOKUP: u8 = 0x10;
const STATUS_INVALID_ROLE: u8 = 0x09;
const STATUS_UNAUTHORIZED_ROLE: u8 = 0x0A;
const STATUS_UNAUTHORIZED_NAME: u8 = 0x0D;
/// RAKP 3 status that ends the attempt.
const STATUS_INVALID_INTEGRITY: u8 = 0x0F;

pub(super) fn diagnose(address: &str, port: u16, user: &str, timeout: Duration) -> Diagnosis {
    match rakp2_status(address, port, user, ROLE_ADMINISTRATOR | NAME_ONLY_LOOKUP, timeout) {
        Err(e) => Diagnosis::Unknown(e),
        Ok(STATUS_UNAUTHORIZED_NAME) => Diagnosis::NoSuchUser,
        Ok(STATUS_INVALID_ROLE | STATUS_UNAUTHORIZED_ROLE) => Diagnosis::BelowAdministrator,
        Ok(0) => match rakp2_status(address, port, user, ROLE_ADMINISTRATOR, timeout) {
            // The lookup ipmi-rs makes: by name and privilege together.
            Ok(0) => Diagnosis::UserAccepted,
            Ok(STATUS_UNAUTHORIZED_NAME | STATUS_INVALID_ROLE | STATUS_UNAUTHORIZED_ROLE) => {
                Diagnosis::BelowAdministrator
            }
            Ok(s) => Diagnosis::Unknown(format!("RAKP 2 status 0x{s:02x}")),
            Err(e) => Diagnosis::Unknown(e),
        },
        Ok(s) => Diagnosis::Unknown(format!("RAKP 2 status 0x{s:02x}")),
    }
}

/// Opens a session with cipher suite 3, sends RAKP 1 with `role`, and returns
/// the RAKP 2 status code.
fn rakp2_status(address: &str, port: u16, user: &str, role: u8, timeout: Duration) -> Result<u8, String> {
    let remote: SocketAddr = (address, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{address} has no address"))?;
    let local = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    socket.connect(remote).map_err(|e| e.to_string())?;

    let console_id = loop {
        let id: u32 = rand::random();
        if id != 0 {
            break id;
        }
    };
    let mut open = vec![0x01, ROLE_ADMINISTRATOR, 0, 0];
    open.extend_from_slice(&console_id.to_le_bytes());
    // RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128: cipher suite 3, as ipmi-rs.
    open.extend_from_slice(&[0x00, 0, 0, 0x08, 0x01, 0, 0, 0]);
    open.extend_from_slice(&[0x01, 0, 0, 0x08, 0x01, 0, 0, 0]);
    open.extend_from_slice(&[0x02, 0, 0, 0x08, 0x01, 0, 0, 0]);
    let reply = exchange(
        &socket,
        PAYLOAD_OPEN_SESSION_REQUEST,
        &open,
        PAYLOAD_OPEN_SESSION_RESPONSE,
    )?;
    match reply.get(1) {
        Some(0) => {}
        Some(s) => return Err(format!("Open Session status 0x{s:02x}")),
        None => return Err("empty Open Session response".into()),
    }
    let bmc_id = reply.get(8..12).ok_or("short Open Session response")?.to_vec();

    let name = user.as_bytes();
    let name_len = u8::try_from(name.len()).map_err(|_| "user name too long")?;
    let mut rakp1 = vec![0x02, 0, 0, 0];
    rakp1.extend_from_slice(&bmc_id);
    rakp1.extend_from_slice(&rand::random::<[u8; 16]>());
    rakp1.extend_from_slice(&[role, 0, 0, name_len]);
    rakp1.extend_from_slice(name);
    let reply = exchange(&socket, PAYLOAD_RAKP1, &rakp1, PAYLOAD_RAKP2)?;
    let status = *reply.get(1).ok_or("empty RAKP 2")?;
    if status == 0 {
        // The BMC holds a half-open session for us: end it now rather than
        // leave it to the BMC's timeout.
        let mut rakp3 = vec![0x03, STATUS_INVALID_INTEGRITY, 0, 0];
        rakp3.extend_from_slice(&bmc_id);
        let _ = socket.send(&packet(PAYLOAD_RAKP3, &rakp3));
    }
    Ok(status)
}

/// An unauthenticated RMCP+ packet (session 0, sequence 0).
fn packet(payload_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = RMCP_HEADER.to_vec();
    p.extend_from_slice(&[AUTH_RMCP_PLUS, payload_type]);
    p.extend_from_slice(&[0; 8]);
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    p.extend_from_slice(&len.to_le_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends one packet and returns the payload of the answer of type `want`.
fn exchange(socket: &UdpSocket, payload_type: u8, payload: &[u8], want: u8) -> Result<Vec<u8>, String> {
    socket.send(&packet(payload_type, payload)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    let data = buf.get(..n).ok_or("bad length")?;
    // RMCP header (4), auth type, payload type, session id (4), sequence (4), length (2).
    let header = data.get(..16).ok_or("short packet")?;
    if header.get(..4) != Some(&RMCP_HEADER[..]) || header.get(4) != Some(&AUTH_RMCP_PLUS) {
        return Err("not an RMCP+ answer".into());
    }
    if header.get(5).map(|t| t & 0x3F) != Some(want) {
        return Err(format!("unexpected payload type {:?}", header.get(5)));
    }
    let len = usize::from(u16::from_le_bytes([header[14], header[15]]));
    Ok(data.get(16..16 + len).ok_or("truncated payload")?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_have_the_rmcp_plus_layout() {
        let p = packet(PAYLOAD_RAKP1, &[1, 2, 3]);
        assert_eq!(
            p,
            vec![0x06, 0x00, 0xFF, 0x07, 0x06, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 2, 3]
        );
    }

    #[test]
    fn nothing_listening_is_unknown_not_a_verdict() {
        let free = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let d = diagnose("127.0.0.1", port, "admin", Duration::from_millis(200));
        assert!(matches!(d, Diagnosis::Unknown(_)), "{d:?}");
    }
}
