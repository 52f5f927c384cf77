//! The errors of the VM drivers: the one `DriverError` the `Hypervisor` trait returns, and what
//! only libvirt or only Proxmox can get wrong. Below the trait and both drivers, so that neither
//! imports the other.

use super::model::SpecError;

/// Why a driver could not build a script, or read what its read script printed.
///
/// One type for every driver: the engine holds drivers as `dyn Hypervisor` (the kind is chosen
/// from the inventory at run time), so the trait's methods need one error type. What only one
/// driver can get wrong lives in that driver's enum ([`LibvirtError`], [`ProxmoxError`]), wrapped
/// here; what every driver checks the same way is a variant of its own, so a caller can match it
/// without knowing the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "`{name}` cannot be used as a VM name on a hypervisor (lowercase letters, digits, - and _)"
    )]
    BadName { name: String },
    /// The inventory does not say enough to create the VM.
    #[error(transparent)]
    NotCreatable(#[from] SpecError),
    /// An update plan without the VM's state (a bug in the caller).
    #[error("an update needs the VM's state")]
    UpdateWithoutState { vm: String },
    /// `update_script` given a plan that is not an update (a bug in the caller).
    #[error("{vm}: not an update")]
    NotAnUpdate { vm: String },
    /// A plan without the part its action needs (`spec` to create, `state` to adopt or delete;
    /// a bug in the caller).
    #[error("no {missing}")]
    IncompletePlan { vm: String, missing: &'static str },
    #[error("the {hypervisor} driver has no console for {vm}")]
    NoConsole {
        hypervisor: &'static str,
        vm: String,
    },
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
    #[error(transparent)]
    Proxmox(#[from] ProxmoxError),
}

/// A field of a read script's output that is not what the script writes (base64 of UTF-8 text).
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("unreadable base64 from the read script: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("not UTF-8: {0}")]
    Utf8(#[source] std::string::FromUtf8Error),
}

/// Names for a message: `a, b`, or `none`.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// What only the libvirt driver can get wrong: a host's read output it cannot use, or a disk it
/// has nowhere to put. `host` is the hypervisor's inventory name.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// A field of the read script's output on `host` is not what the script writes.
    #[error("{source}")]
    ReadOutput {
        host: String,
        #[source]
        source: FieldError,
    },
    #[error("the configuration of VM `{vm}` on {host}: {source}")]
    Domain {
        host: String,
        vm: String,
        #[source]
        source: DomainXmlError,
    },
    /// `available`: the pools `host` has.
    #[error(
        "storage pool `{pool}` does not exist on {host} (pools there: {}). Define it with `virsh \
         pool-define-as {pool} dir --target DIR`, or name an existing one in the inventory",
        listed(.available)
    )]
    NoPool {
        host: String,
        pool: String,
        available: Vec<String>,
    },
    #[error("image `{image}`: give the name of a base image in the pool, not a path")]
    ImageIsPath { vm: String, image: String },
}

/// Why a domain's XML (`virsh dumpxml`) does not read as a VM.
#[derive(Debug, thiserror::Error)]
pub enum DomainXmlError {
    #[error("not valid XML: {0}")]
    NotXml(#[source] roxmltree::Error),
    #[error("not a libvirt <domain>")]
    NotADomain,
    /// `element`: the tag, without brackets (`name`, `memory`).
    #[error("no <{element}>")]
    Missing { element: &'static str },
    #[error("live XML not valid: {0}")]
    LiveNotXml(#[source] roxmltree::Error),
}

/// What only the Proxmox driver can get wrong. `host` is the hypervisor's inventory name.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    /// A field of the read script's output on `host` is not what the script writes.
    #[error("{source}")]
    ReadOutput {
        host: String,
        #[source]
        source: FieldError,
    },
    /// `pvesh get /cluster/resources` on `host` printed something picaops cannot read.
    #[error("{source}")]
    Resources {
        host: String,
        #[source]
        source: ResourcesError,
    },
    /// `pvesh get /storage` on `host` printed something picaops cannot read.
    #[error("pvesh get /storage: {source}")]
    Storages {
        host: String,
        #[source]
        source: ResourcesError,
    },
    /// `allowing`: the storages of `host` that allow snippets.
    #[error(
        "storage `{storage}` does not exist on {host}, and {vm} gets its SSH host key through a \
         cloud-init snippet there (storages that allow snippets on {host}: {}). Set \
         `snippets_storage:` on {host} in the inventory to one of them; nothing was created",
        listed(.allowing)
    )]
    NoSnippetsStorage {
        host: String,
        vm: String,
        storage: String,
        allowing: Vec<String>,
    },
    /// `content`: what the storage allows now (`iso,backup`).
    #[error(
        "storage `{storage}` on {host} does not allow snippets (its content: {content}), and {vm} \
         gets its SSH host key through a cloud-init snippet there. Allow them, keeping what it \
         holds: `pvesm set {storage} --content {content},snippets`; or set `snippets_storage:` on \
         {host} in the inventory to a storage that allows them ({}). Nothing was created",
        listed(.allowing)
    )]
    SnippetsNotAllowed {
        host: String,
        vm: String,
        storage: String,
        content: String,
        allowing: Vec<String>,
    },
    #[error("VM {vm} has no numeric VMID")]
    NoVmid { vm: String },
    /// `available`: the templates `host` has.
    #[error(
        "no template named `{image}` on {host} (templates there: {}). Make one (a VM converted \
         to a template, with a cloud-init drive), or fix image: in the inventory",
        listed(.available)
    )]
    NoTemplate {
        host: String,
        vm: String,
        image: String,
        available: Vec<String>,
    },
    #[error(
        "Proxmox cannot shrink a disk ({dev} of {vm}): copy the data to a smaller new disk by hand"
    )]
    CannotShrink { vm: String, dev: String },
}

/// Why `pvesh get /cluster/resources` output is not a list of guests.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("pvesh printed something other than JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("no `data` array in pvesh's answer")]
    NoData,
    #[error("pvesh's answer is not a list")]
    NotAList,
}
