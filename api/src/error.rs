//! The errors of the API, as named D-Bus errors.

use zbus::DBusError;

/// What a tandem method call can fail with.
///
/// The service replies with the named variants; a client gets them back from the
/// proxies (the name is matched, the message is the one line for the user).
/// Anything else (no bus, no tandemd, a timeout, the bus policy's
/// `org.freedesktop.DBus.Error.AccessDenied`) arrives as [`Error::ZBus`].
#[derive(Debug, DBusError, PartialEq)]
#[zbus(prefix = "org.tandem.Tandem1.Error")]
pub enum Error {
    /// Not from tandem: the bus, the transport or zbus failed.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// `org.tandem.Tandem1.Error.Refused`: the core said no; the message says why.
    Refused(String),
    /// `org.tandem.Tandem1.Error.NotFound`: no such domain or resource.
    NotFound(String),
    /// `org.tandem.Tandem1.Error.InvalidArgs`: an argument tandem does not accept.
    InvalidArgs(String),
    /// `org.tandem.Tandem1.Error.ShuttingDown`: tandemd is stopping.
    ShuttingDown(String),
}

impl Error {
    /// The one line a hook or tandemctl shows the user (without the error name).
    pub fn reason(&self) -> String {
        match self {
            Error::Refused(m) | Error::NotFound(m) | Error::InvalidArgs(m) | Error::ShuttingDown(m) => m.clone(),
            Error::ZBus(e) => match e {
                zbus::Error::MethodError(name, Some(desc), _) => format!("{desc} ({name})"),
                zbus::Error::MethodError(name, None, _) => name.to_string(),
                other => other.to_string(),
            },
        }
    }

    /// Whether the bus refused the call by its policy (the caller lacks the rights).
    pub fn is_access_denied(&self) -> bool {
        const DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
        match self {
            Error::ZBus(zbus::Error::MethodError(name, ..)) => name.as_str() == DENIED,
            Error::ZBus(zbus::Error::FDO(e)) => matches!(**e, zbus::fdo::Error::AccessDenied(_)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_name;

    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(Error::Refused(String::new()).name().as_str(), error_name::REFUSED);
        assert_eq!(Error::NotFound(String::new()).name().as_str(), error_name::NOT_FOUND);
        assert_eq!(
            Error::InvalidArgs(String::new()).name().as_str(),
            error_name::INVALID_ARGS
        );
        assert_eq!(
            Error::ShuttingDown(String::new()).name().as_str(),
            error_name::SHUTTING_DOWN
        );
        for n in [
            error_name::REFUSED,
            error_name::NOT_FOUND,
            error_name::INVALID_ARGS,
            error_name::SHUTTING_DOWN,
        ] {
            assert!(n.starts_with(error_name::PREFIX));
        }
    }

    #[test]
    fn a_method_error_with_a_tandem_name_becomes_its_variant() {
        let name = zbus::names::OwnedErrorName::try_from(error_name::REFUSED).unwrap();
        // zbus keeps the failed call's reply; any message stands in for it here.
        let msg = zbus::Message::method_call("/", "X").build(&()).unwrap();
        let e = Error::from(zbus::Error::MethodError(name, Some("no".into()), msg));
        assert_eq!(e, Error::Refused("no".into()));
        assert_eq!(e.reason(), "no");
        assert!(!e.is_access_denied());
    }
}
