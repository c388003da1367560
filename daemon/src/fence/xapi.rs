//! XenAPI fencing (a node that is itself a VM on a XenServer / XCP-ng pool). The
//! client lives in the `xapi-fence` crate, which is not built yet; until then the
//! device exists so the configuration loads and the level fails with a clear
//! message, letting the next level run.

use super::{DeviceError, DeviceErrorKind, DeviceId, FenceAction, Fencer, PowerState};
use crate::config::XapiDevice;

#[derive(Debug)]
pub struct XapiFencer {
    id: DeviceId,
    // Kept for the real client, which needs all of it.
    #[allow(dead_code)]
    config: XapiDevice,
}

impl XapiFencer {
    pub fn new(config: XapiDevice) -> Self {
        XapiFencer {
            id: DeviceId {
                kind: "xapi",
                target: format!("{} (VM {})", config.url, config.vm),
            },
            config,
        }
    }

    fn not_built(&self, action: FenceAction) -> DeviceError {
        DeviceError {
            device: self.id.clone(),
            action,
            kind: DeviceErrorKind::Unsupported {
                detail: "XenAPI fencing is not built into this tandemd yet; use another fence level, \
                         or kind = \"agent\" with a XenAPI fence agent (fence_xenapi)"
                    .into(),
            },
        }
    }
}

impl Fencer for XapiFencer {
    fn id(&self) -> &DeviceId {
        &self.id
    }

    async fn run(&self, action: FenceAction) -> Result<PowerState, DeviceError> {
        Err(self.not_built(action))
    }
}
