//! Where a deployment request stands: the one vocabulary the store, the
//! control plane and the CLI share.

/// Where a deployment request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentState {
    /// Asked for; no outcome yet.
    Pending,
    /// Published with this generation (before a restart, possibly).
    Running,
    /// Could not be started; not retried until asked again.
    Failed,
}

impl DeploymentState {
    /// The name kept in the store and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Pending => "pending",
            DeploymentState::Running => "running",
            DeploymentState::Failed => "failed",
        }
    }

    /// The state named `name`, if it is one.
    pub fn parse(name: &str) -> Option<DeploymentState> {
        match name {
            "pending" => Some(DeploymentState::Pending),
            "running" => Some(DeploymentState::Running),
            "failed" => Some(DeploymentState::Failed),
            _ => None,
        }
    }
}
