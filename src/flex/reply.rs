//! The one JSON object flexrex prints, and the exit code that goes with it.

use serde::Serialize;

/// `status` values kubelet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// The call did what was asked.
    Success,
    /// The call failed; `message` says why.
    Failure,
    /// The sub-command is not implemented; kubelet uses its default.
    #[serde(rename = "Not supported")]
    NotSupported,
}

/// What `init` announces. kubelet starts from its defaults and overwrites
/// the fields present, so every one is spelled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// kubelet calls attach/detach/mountdevice/unmountdevice.
    pub attach: bool,
    /// kubelet may relabel the mount for SELinux.
    #[serde(rename = "selinuxRelabel")]
    pub selinux_relabel: bool,
    /// kubelet reports statfs of the pod's volume directory.
    pub supports_metrics: bool,
    /// kubelet applies the pod's fsGroup to the files itself.
    pub fs_group: bool,
    /// kubelet calls expandfs after expandvolume.
    #[serde(rename = "requiresFSResize")]
    pub requires_fs_resize: bool,
}

/// flexrex's capabilities.
pub const CAPABILITIES: Capabilities = Capabilities {
    attach: true,
    selinux_relabel: true,
    supports_metrics: true,
    fs_group: true,
    requires_fs_resize: true,
};

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// Why (failures), or a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The attached device (attach, waitforattach).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A cluster-wide unique name of the volume (getvolumename).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// Whether the volume is attached to this node (isattached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    /// init only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Size in bytes after an expand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_new_size: Option<u64>,
}

impl Reply {
    /// A bare success.
    pub fn success() -> Reply {
        Reply {
            status: Status::Success,
            message: None,
            device: None,
            volume_name: None,
            attached: None,
            capabilities: None,
            volume_new_size: None,
        }
    }
    /// A failure with its reason.
    pub fn failure(message: impl Into<String>) -> Reply {
        Reply {
            status: Status::Failure,
            message: Some(message.into()),
            ..Reply::success()
        }
    }
    /// "Not supported".
    pub fn not_supported(message: impl Into<String>) -> Reply {
        Reply {
            status: Status::NotSupported,
            message: Some(message.into()),
            ..Reply::success()
        }
    }
    /// With a message.
    pub fn with_message(mut self, m: impl Into<String>) -> Reply {
        self.message = Some(m.into());
        self
    }

    /// The JSON line to print.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"status":"Failure","message":"flexrex could not encode its reply"}"#.into()
        })
    }

    /// The exit code. kubelet reads the status from the JSON whatever the
    /// exit code is, and treats "Not supported" the same way after a zero
    /// or non-zero exit (driver-call.go: it parses the output first and
    /// falls back to its default on that status). We exit 1 for it, as
    /// the original did, so that exit 0 always means Success: a caller
    /// that looks only at the exit code never mistakes "not done" for done.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::Success => 0,
            Status::Failure | Status::NotSupported => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(Reply::success().to_json(), r#"{"status":"Success"}"#);
        let r = Reply {
            attached: Some(false),
            ..Reply::success()
        };
        assert_eq!(r.to_json(), r#"{"status":"Success","attached":false}"#);
        let r = Reply::not_supported("x");
        assert!(r.to_json().contains(r#""status":"Not supported""#));
        assert_eq!(r.exit_code(), 1);
        let r = Reply {
            capabilities: Some(CAPABILITIES),
            volume_new_size: Some(5),
            ..Reply::success()
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["capabilities"]["attach"], true);
        assert_eq!(v["capabilities"]["requiresFSResize"], true);
        assert_eq!(v["capabilities"]["selinuxRelabel"], true);
        assert_eq!(v["volumeNewSize"], 5);
    }
}
