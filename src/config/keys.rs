//! The registry of configuration keys: canonical spelling, default, type,
//! the older spellings still accepted, and a one-line description.

/// How a key's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Any string.
    Str,
    /// true/false.
    Bool,
    /// Size in GiB (1..=65536).
    SizeGib,
    /// A whole number >= 0, or empty for "unset".
    OptUint,
    /// A duration such as `30s`, `2m`, `500ms`.
    Duration,
    /// A duration that may also be `0s` (off).
    DurationOrZero,
    /// A whole number from 1 to the bound.
    Count(u64),
    /// One of a fixed set of words (case-insensitive).
    OneOf(&'static [&'static str]),
    /// A filesystem path (absolute).
    Path,
}

/// One registered key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    /// Canonical spelling (the one `rexray env` shows).
    pub key: &'static str,
    /// Default value; `{lib}` and friends are replaced with the directories.
    pub default: &'static str,
    /// Type.
    pub ty: KeyType,
    /// Other spellings, in priority order after the canonical one.
    pub aliases: &'static [&'static str],
    /// What it does.
    pub help: &'static str,
}

/// The integration volume operations prefix (`…` in the docs).
pub const OPS: &str = "libstorage.integration.volume.operations";

macro_rules! ops {
    ($s:literal) => {
        concat!("libstorage.integration.volume.operations.", $s)
    };
}
macro_rules! old {
    ($s:literal) => {
        concat!("libstorage.integration.volume.", $s)
    };
}

pub const LOG_LEVEL: &str = "rexray.logLevel";
pub const SERVICE: &str = "libstorage.service";
pub const CREATE_SIZE: &str = ops!("create.default.size");
pub const CREATE_FSTYPE: &str = ops!("create.default.fsType");
pub const CREATE_TYPE: &str = ops!("create.default.type");
pub const CREATE_IOPS: &str = ops!("create.default.iops");
pub const CREATE_AZ: &str = ops!("create.default.availabilityZone");
pub const CREATE_DISABLE: &str = ops!("create.disable");
pub const CREATE_IMPLICIT: &str = ops!("create.implicit");
pub const MOUNT_PREEMPT: &str = ops!("mount.preempt");
pub const MOUNT_PATH: &str = ops!("mount.path");
pub const MOUNT_ROOT_PATH: &str = ops!("mount.rootPath");
pub const UNMOUNT_IGNORE_USED_COUNT: &str = ops!("unmount.ignoreUsedCount");
pub const REMOVE_DISABLE: &str = ops!("remove.disable");
pub const ATTACH_TIMEOUT: &str = "libstorage.device.attachTimeout";
pub const LOCK_TIMEOUT: &str = "rexray.lockTimeout";
pub const FREEZE_TIMEOUT: &str = "rexray.freezeTimeout";
pub const FORMAT_TIMEOUT: &str = "libstorage.device.formatTimeout";
pub const LOOP_VOLUME_PATH: &str = "loop.volumePath";
pub const LOOP_PREALLOCATE: &str = "loop.preallocate";
pub const VFS_ROOT: &str = "vfs.root";
pub const RBD_DEFAULT_POOL: &str = "rbd.defaultPool";
pub const RBD_CEPH_ARGS: &str = "rbd.cephArgs";
pub const RBD_TEST_MODULE: &str = "rbd.testModule";
pub const RBD_TIMEOUT: &str = "rbd.timeout";
pub const RBD_LIBRARY: &str = "rbd.library";
pub const S3FS_ENDPOINT: &str = "s3fs.endpoint";
pub const S3FS_REGION: &str = "s3fs.region";
pub const S3FS_ACCESS_KEY: &str = "s3fs.accessKey";
pub const S3FS_SECRET_KEY: &str = "s3fs.secretKey";
pub const S3FS_OPTIONS: &str = "s3fs.options";
pub const S3FS_CMD: &str = "s3fs.cmd";
pub const S3FS_HOST_NAME: &str = "s3fs.hostName";
pub const S3FS_MAX_RETRIES: &str = "s3fs.maxRetries";
pub const S3FS_DISABLE_PATH_STYLE: &str = "s3fs.disablePathStyle";
pub const S3FS_TAG: &str = "s3fs.tag";
pub const S3FS_CA_FILE: &str = "s3fs.caFile";
pub const DOCKER_HOST: &str = "rexray.modules.default-docker.host";
pub const CSI_MODE: &str = "rexray.csi.mode";
pub const CSI_MAX_VOLUMES: &str = "rexray.csi.maxVolumesPerNode";
pub const DOCKER_SPEC: &str = "rexray.modules.default-docker.spec";
pub const DOCKER_DISABLED: &str = "rexray.modules.default-docker.disabled";
pub const DOCKER_HEADER_TIMEOUT: &str = "rexray.modules.default-docker.headerTimeout";
pub const DOCKER_IDLE_TIMEOUT: &str = "rexray.modules.default-docker.idleTimeout";
pub const DOCKER_MAX_CONNECTIONS: &str = "rexray.modules.default-docker.maxConnections";
pub const FLEXREX_LOG_FILE: &str = "rexray.flexrex.logFile";
pub const LIBSTORAGE_HOST: &str = "libstorage.host";
pub const LIBSTORAGE_EMBEDDED: &str = "libstorage.embedded";
pub const SERVER_EXE_TIMEOUT: &str = "libstorage.server.tasks.exeTimeout";
pub const SERVER_LOG_TIMEOUT: &str = "libstorage.server.tasks.logTimeout";
pub const SERVER_MAX_TASKS: &str = "libstorage.server.tasks.maxInFlight";
pub const SERVER_HEADER_TIMEOUT: &str = "libstorage.server.headerTimeout";
pub const SERVER_IDLE_TIMEOUT: &str = "libstorage.server.idleTimeout";
pub const SERVER_MAX_CONNECTIONS: &str = "libstorage.server.maxConnections";
pub const SERVER_TLS_DISABLED: &str = "libstorage.server.tls.disabled";
pub const SERVER_TLS_CERT_FILE: &str = "libstorage.server.tls.certFile";
pub const SERVER_TLS_KEY_FILE: &str = "libstorage.server.tls.keyFile";
pub const SERVER_TLS_TRUSTED_CERTS_FILE: &str = "libstorage.server.tls.trustedCertsFile";
pub const SERVER_TLS_CLIENT_CERT_REQUIRED: &str = "libstorage.server.tls.clientCertRequired";
pub const CLIENT_TLS: &str = "libstorage.client.tls";
pub const CLIENT_TLS_DISABLED: &str = "libstorage.client.tls.disabled";
pub const CLIENT_TLS_INSECURE: &str = "libstorage.client.tls.insecure";
pub const CLIENT_TLS_SERVER_NAME: &str = "libstorage.client.tls.serverName";
pub const CLIENT_TLS_KNOWN_HOSTS: &str = "libstorage.client.tls.knownHosts";
pub const CLIENT_TLS_VERIFY_PEERS: &str = "libstorage.client.tls.verifyPeers";
pub const CLIENT_TLS_TRUSTED_CERTS_FILE: &str = "libstorage.client.tls.trustedCertsFile";
pub const CLIENT_TLS_CERT_FILE: &str = "libstorage.client.tls.certFile";
pub const CLIENT_TLS_KEY_FILE: &str = "libstorage.client.tls.keyFile";
pub const SERVER_AUTH_KEY: &str = "libstorage.server.auth.key";
pub const SERVER_AUTH_ALG: &str = "libstorage.server.auth.alg";
pub const SERVER_AUTH_ALLOW: &str = "libstorage.server.auth.allow";
pub const SERVER_AUTH_DENY: &str = "libstorage.server.auth.deny";
pub const SERVER_AUTH_DISABLED: &str = "libstorage.server.auth.disabled";
pub const CLIENT_AUTH_TOKEN: &str = "libstorage.client.auth.token";

/// Keys whose values are secrets: `rexray env` does not print them.
pub const SECRETS: &[&str] = &[SERVER_AUTH_KEY, CLIENT_AUTH_TOKEN, S3FS_SECRET_KEY];

/// Every key the configuration knows.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        key: LOG_LEVEL,
        default: "warn",
        ty: KeyType::OneOf(&[
            "panic", "fatal", "error", "warn", "warning", "info", "debug", "trace",
        ]),
        aliases: &["libstorage.logging.level"],
        help: "log level for stderr (and the flexrex log file)",
    },
    KeyDef {
        key: SERVICE,
        default: "loop",
        ty: KeyType::Str,
        aliases: &["rexray.service", "rexray.storageDrivers"],
        help: "the storage service (or driver) the CLI uses",
    },
    KeyDef {
        key: CREATE_SIZE,
        default: "16",
        ty: KeyType::SizeGib,
        aliases: &[old!("create.default.size"), "docker.size"],
        help: "size in GiB of volumes created without a size",
    },
    KeyDef {
        key: CREATE_FSTYPE,
        default: "ext4",
        ty: KeyType::OneOf(&["ext4", "xfs"]),
        aliases: &[old!("create.default.fsType"), "docker.fsType"],
        help: "filesystem made on a blank volume at its first mount",
    },
    KeyDef {
        key: CREATE_TYPE,
        default: "",
        ty: KeyType::Str,
        aliases: &[old!("create.default.type"), "docker.volumeType"],
        help: "volume type of new volumes",
    },
    KeyDef {
        key: CREATE_IOPS,
        default: "",
        ty: KeyType::OptUint,
        aliases: &[old!("create.default.iops"), "docker.iops"],
        help: "IOPS of new volumes",
    },
    KeyDef {
        key: CREATE_AZ,
        default: "",
        ty: KeyType::Str,
        aliases: &[
            old!("create.default.availabilityZone"),
            "docker.availabilityZone",
        ],
        help: "availability zone of new volumes",
    },
    KeyDef {
        key: CREATE_DISABLE,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[old!("create.disable"), "volume.create.disable"],
        help: "make create a no-op that succeeds",
    },
    KeyDef {
        key: CREATE_IMPLICIT,
        default: "true",
        ty: KeyType::Bool,
        aliases: &[old!("create.implicit")],
        help: "let scheduler mounts (dvdcli) create missing volumes",
    },
    KeyDef {
        key: MOUNT_PREEMPT,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[old!("mount.preempt"), "volume.mount.preempt"],
        help: "take a volume attached to another instance when mounting it",
    },
    KeyDef {
        key: MOUNT_PATH,
        default: "{lib}/volumes",
        ty: KeyType::Path,
        aliases: &[old!("mount.path"), "docker.mountDirPath"],
        help: "directory under which volumes are mounted, one directory per name",
    },
    KeyDef {
        key: MOUNT_ROOT_PATH,
        default: "/data",
        ty: KeyType::Str,
        aliases: &[old!("mount.rootPath"), "linux.volume.rootPath"],
        help: "sub-directory of a mounted volume handed to applications",
    },
    KeyDef {
        key: UNMOUNT_IGNORE_USED_COUNT,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[
            old!("unmount.ignoreUsedCount"),
            "volume.unmount.ignoreUsedCount",
        ],
        help: "unmount on every unmount request, whatever other consumers hold",
    },
    KeyDef {
        key: REMOVE_DISABLE,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[old!("remove.disable"), "volume.remove.disable"],
        help: "make remove a no-op that succeeds",
    },
    KeyDef {
        key: ATTACH_TIMEOUT,
        default: "30s",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long to wait for an attached device to appear",
    },
    KeyDef {
        key: FORMAT_TIMEOUT,
        default: "10m",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long mkfs may run before it is stopped and the mount fails",
    },
    KeyDef {
        key: LOCK_TIMEOUT,
        default: "5m",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long an operation waits for another one on the same volume",
    },
    KeyDef {
        key: FREEZE_TIMEOUT,
        default: "10m",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long a mounted volume may stay frozen for a snapshot or copy before it is thawed and the copy discarded",
    },
    KeyDef {
        key: LOOP_VOLUME_PATH,
        default: "{lib}/loop",
        ty: KeyType::Path,
        aliases: &[],
        help: "where the loop driver keeps volume images and its catalog",
    },
    KeyDef {
        key: LOOP_PREALLOCATE,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[],
        help: "allocate a loop volume's whole image at create (and copy) instead of a sparse file; refused when the space is not there",
    },
    KeyDef {
        key: VFS_ROOT,
        default: "{lib}/vfs",
        ty: KeyType::Path,
        aliases: &[],
        help: "where the vfs driver keeps volume directories",
    },
    KeyDef {
        key: RBD_DEFAULT_POOL,
        default: "rbd",
        ty: KeyType::Str,
        aliases: &[],
        help: "the Ceph pool the rbd driver keeps its images in",
    },
    KeyDef {
        key: RBD_CEPH_ARGS,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "arguments for the Ceph tools (e.g. --conf /etc/ceph/ceph.conf --id rexray); files and ids only, never a key (default: the CEPH_ARGS environment variable)",
    },
    KeyDef {
        key: RBD_TEST_MODULE,
        default: "true",
        ty: KeyType::Bool,
        aliases: &[],
        help: "try loading the rbd (then nbd) kernel module before choosing how a node attaches images",
    },
    KeyDef {
        key: RBD_TIMEOUT,
        default: "30s",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long one call of the Ceph tools may take before the cluster is reported unreachable",
    },
    KeyDef {
        key: RBD_LIBRARY,
        default: "auto",
        ty: KeyType::OneOf(&["auto", "off"]),
        aliases: &[],
        help: "how the rbd driver reaches Ceph: auto (librbd and librados, loaded at run time, when the host has them; else the rbd and rados tools) or off (the tools only)",
    },
    KeyDef {
        key: S3FS_ENDPOINT,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "the S3 endpoint the s3fs driver keeps its buckets on (http://host:port or https://host:port)",
    },
    KeyDef {
        key: S3FS_REGION,
        default: "us-east-1",
        ty: KeyType::Str,
        aliases: &[],
        help: "the region requests to the S3 endpoint are signed for",
    },
    KeyDef {
        key: S3FS_ACCESS_KEY,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "the S3 access key id (default: the AWS_ACCESS_KEY_ID environment variable)",
    },
    KeyDef {
        key: S3FS_SECRET_KEY,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "the S3 secret access key (default: the AWS_SECRET_ACCESS_KEY environment variable); nodes give it to s3fs in a 0600 file",
    },
    KeyDef {
        key: S3FS_OPTIONS,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "more s3fs mount options, comma-separated (e.g. use_cache=/var/cache/s3fs)",
    },
    KeyDef {
        key: S3FS_CMD,
        default: "s3fs",
        ty: KeyType::Str,
        aliases: &[],
        help: "the s3fs program nodes mount buckets with (looked up in PATH)",
    },
    KeyDef {
        key: S3FS_HOST_NAME,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "the host name in this node's instance id for the s3fs driver (default: the system's host name)",
    },
    KeyDef {
        key: S3FS_MAX_RETRIES,
        default: "10",
        ty: KeyType::OptUint,
        aliases: &[],
        help: "how often a failed S3 request (no answer, or a 5xx) is retried, and s3fs's retries=; 0 to 100",
    },
    KeyDef {
        key: S3FS_DISABLE_PATH_STYLE,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[],
        help: "virtual-hosted-style requests instead of path-style; not supported: true is refused",
    },
    KeyDef {
        key: S3FS_TAG,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "the original's bucket tag; not supported: a value is refused",
    },
    KeyDef {
        key: S3FS_CA_FILE,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "PEM file of CA certificates trusted for an https s3fs.endpoint besides the system's (absolute path; e.g. a private CA's)",
    },
    KeyDef {
        key: DOCKER_HOST,
        default: "unix:///run/docker/plugins/rexray.sock",
        ty: KeyType::Str,
        aliases: &[],
        help: "Docker volume plugin endpoint (unix:///path or tcp://host:port)",
    },
    KeyDef {
        key: DOCKER_SPEC,
        default: "/etc/docker/plugins/rexray.spec",
        ty: KeyType::Path,
        aliases: &[],
        help: "spec file written for a tcp endpoint",
    },
    KeyDef {
        key: DOCKER_DISABLED,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[],
        help: "turn the Docker volume plugin endpoint off",
    },
    KeyDef {
        key: DOCKER_HEADER_TIMEOUT,
        default: "10s",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long a client of the Docker endpoint may take to send a request's headers before its connection is closed",
    },
    KeyDef {
        key: DOCKER_IDLE_TIMEOUT,
        default: "60s",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long a keep-alive connection to the Docker endpoint may wait for its next request before it is closed",
    },
    KeyDef {
        key: DOCKER_MAX_CONNECTIONS,
        default: "1024",
        ty: KeyType::Count(1_000_000),
        aliases: &[],
        help: "connections the Docker endpoint keeps open at once; at the limit the one idle the longest is closed",
    },
    KeyDef {
        key: CSI_MODE,
        default: "all",
        ty: KeyType::OneOf(&["controller", "node", "all"]),
        aliases: &[],
        help: "which CSI services the csi modules serve: controller (one per cluster), node (one per node) or all (both, and Identity always)",
    },
    KeyDef {
        key: CSI_MAX_VOLUMES,
        default: "",
        ty: KeyType::OptUint,
        aliases: &[],
        help: "the most volumes the scheduler may place on this node through CSI (NodeGetInfo); empty or 0: no limit",
    },
    KeyDef {
        key: LIBSTORAGE_HOST,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "the libStorage server this node's rexray, flexrex, dvdcli and Docker plugin send controller operations to (unix:///path.sock, tcp://host:port or https://host:port); empty: a server announced in <run>/rexray.spec, else the driver is used directly (embedded)",
    },
    KeyDef {
        key: LIBSTORAGE_EMBEDDED,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[],
        help: "ignore libstorage.host and use the driver directly (or a server announced in <run>/rexray.spec)",
    },
    KeyDef {
        key: SERVER_EXE_TIMEOUT,
        default: "1m",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long a libStorage API request waits for its operation; then it is answered 408 with the task, which runs on",
    },
    KeyDef {
        key: SERVER_LOG_TIMEOUT,
        default: "0s",
        ty: KeyType::DurationOrZero,
        aliases: &[],
        help: "how long a finished task of the libStorage API stays listed under /tasks (0s: not at all)",
    },
    KeyDef {
        key: SERVER_MAX_TASKS,
        default: "1024",
        ty: KeyType::Count(1_000_000),
        aliases: &[],
        help: "how many ?async operations of the libStorage API (answered at once, run on) may be unfinished; an ?async request past that is answered busy and starts nothing",
    },
    KeyDef {
        key: SERVER_HEADER_TIMEOUT,
        default: "10s",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long a client of the libStorage API may take to send a request's headers before its connection is closed",
    },
    KeyDef {
        key: SERVER_IDLE_TIMEOUT,
        default: "60s",
        ty: KeyType::Duration,
        aliases: &[],
        help: "how long a keep-alive connection to the libStorage API may wait for its next request before it is closed",
    },
    KeyDef {
        key: SERVER_MAX_CONNECTIONS,
        default: "1024",
        ty: KeyType::Count(1_000_000),
        aliases: &[],
        help: "connections the libStorage API keeps open at once (all endpoints together); at the limit the one idle the longest is closed",
    },
    KeyDef {
        key: SERVER_TLS_DISABLED,
        default: "false",
        ty: KeyType::Bool,
        aliases: &["libstorage.tls.disabled"],
        help: "serve plain HTTP on tcp endpoints even when a certificate is configured",
    },
    KeyDef {
        key: SERVER_TLS_CERT_FILE,
        default: "{etc}/tls/rexray.crt",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.certFile"],
        help: "PEM certificate (chain) of the libStorage server's tcp endpoints; with its key, they serve HTTPS only (the default path is used only when the file exists)",
    },
    KeyDef {
        key: SERVER_TLS_KEY_FILE,
        default: "{etc}/tls/rexray.key",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.keyFile"],
        help: "PEM private key of libstorage.server.tls.certFile",
    },
    KeyDef {
        key: SERVER_TLS_TRUSTED_CERTS_FILE,
        default: "{etc}/tls/cacerts",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.trustedCertsFile"],
        help: "PEM certificates client certificates must be signed by (with libstorage.server.tls.clientCertRequired)",
    },
    KeyDef {
        key: SERVER_TLS_CLIENT_CERT_REQUIRED,
        default: "false",
        ty: KeyType::Bool,
        aliases: &["libstorage.tls.clientCertRequired"],
        help: "refuse TLS clients without a certificate signed by libstorage.server.tls.trustedCertsFile",
    },
    KeyDef {
        key: CLIENT_TLS,
        default: "",
        ty: KeyType::Str,
        aliases: &["libstorage.tls"],
        help: "TLS to a tcp libStorage host in one value: true, false, insecure, verifyPeers, or a pinned known host `HOST sha256 FINGERPRINT`",
    },
    KeyDef {
        key: CLIENT_TLS_DISABLED,
        default: "false",
        ty: KeyType::Bool,
        aliases: &["libstorage.tls.disabled"],
        help: "speak plain HTTP to a tcp:// libStorage host whatever else is configured",
    },
    KeyDef {
        key: CLIENT_TLS_INSECURE,
        default: "false",
        ty: KeyType::Bool,
        aliases: &["libstorage.tls.insecure"],
        help: "use TLS without verifying the server's certificate at all (tests only)",
    },
    KeyDef {
        key: CLIENT_TLS_SERVER_NAME,
        default: "",
        ty: KeyType::Str,
        aliases: &["libstorage.tls.serverName"],
        help: "the name the server's certificate must be valid for (default: the host of libstorage.host)",
    },
    KeyDef {
        key: CLIENT_TLS_KNOWN_HOSTS,
        default: "{etc}/tls/known_hosts",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.knownHosts"],
        help: "file of trusted server certificates by fingerprint, lines `HOST sha256 FINGERPRINT`",
    },
    KeyDef {
        key: CLIENT_TLS_VERIFY_PEERS,
        default: "false",
        ty: KeyType::Bool,
        aliases: &["libstorage.tls.verifyPeers"],
        help: "trust the server by its certificate's fingerprint in libstorage.client.tls.knownHosts rather than by libstorage.client.tls.trustedCertsFile",
    },
    KeyDef {
        key: CLIENT_TLS_TRUSTED_CERTS_FILE,
        default: "{etc}/tls/cacerts",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.trustedCertsFile"],
        help: "PEM certificates the libStorage server's certificate must be signed by (the default path is used only when the file exists)",
    },
    KeyDef {
        key: CLIENT_TLS_CERT_FILE,
        default: "{etc}/tls/rexray.crt",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.certFile"],
        help: "PEM certificate this client presents when the server asks for one",
    },
    KeyDef {
        key: CLIENT_TLS_KEY_FILE,
        default: "{etc}/tls/rexray.key",
        ty: KeyType::Path,
        aliases: &["libstorage.tls.keyFile"],
        help: "PEM private key of libstorage.client.tls.certFile",
    },
    KeyDef {
        key: SERVER_AUTH_KEY,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "HMAC secret (or the path of a file holding it) that the libStorage server checks bearer tokens with; set: every request needs a valid token",
    },
    KeyDef {
        key: SERVER_AUTH_ALG,
        default: "hs256",
        ty: KeyType::OneOf(&["hs256", "hs384", "hs512"]),
        aliases: &[],
        help: "signing algorithm of the bearer tokens",
    },
    KeyDef {
        key: SERVER_AUTH_ALLOW,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "token subjects allowed (comma-separated or a YAML list); empty: every subject with a valid token",
    },
    KeyDef {
        key: SERVER_AUTH_DENY,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "token subjects refused even with a valid token",
    },
    KeyDef {
        key: SERVER_AUTH_DISABLED,
        default: "false",
        ty: KeyType::Bool,
        aliases: &[],
        help: "turn bearer-token authentication off even though a key is configured",
    },
    KeyDef {
        key: CLIENT_AUTH_TOKEN,
        default: "",
        ty: KeyType::Str,
        aliases: &[],
        help: "bearer token (or the path of a file holding it) sent to the libStorage server",
    },
    KeyDef {
        key: FLEXREX_LOG_FILE,
        default: "{log}/flexrex.log",
        ty: KeyType::Path,
        aliases: &[],
        help: "log file of the flexrex FlexVolume driver",
    },
];

/// Find a key definition by canonical spelling (case-insensitive).
pub fn find(key: &str) -> Option<&'static KeyDef> {
    index(key).map(|i| &KEYS[i])
}

/// The position of a registered key in [`KEYS`] (any case): the code's own
/// constants are found by their exact spelling first.
pub fn index(key: &str) -> Option<usize> {
    KEYS.iter()
        .position(|k| k.key == key)
        .or_else(|| KEYS.iter().position(|k| k.key.eq_ignore_ascii_case(key)))
}

/// The environment variable name for a key path: upper case, `.` and `-`
/// become `_`.
pub fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The command-line flag for a key path, as the original derives it: the
/// first segment lower-cased, later segments capitalised, joined.
pub fn flag_name(key: &str) -> String {
    let mut out = String::new();
    for (i, seg) in key.split('.').enumerate() {
        let seg: String = seg.chars().filter(|c| *c != '-').collect();
        if i == 0 {
            out.push_str(&seg.to_ascii_lowercase());
        } else {
            let mut cs = seg.chars();
            if let Some(f) = cs.next() {
                out.push(f.to_ascii_uppercase());
                out.extend(cs);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            env_name(MOUNT_PREEMPT),
            "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT"
        );
        assert_eq!(env_name(DOCKER_HOST), "REXRAY_MODULES_DEFAULT_DOCKER_HOST");
        assert_eq!(
            flag_name(MOUNT_PREEMPT),
            "libstorageIntegrationVolumeOperationsMountPreempt"
        );
        assert_eq!(flag_name(LOOP_VOLUME_PATH), "loopVolumePath");
    }
}
