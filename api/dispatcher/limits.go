package dispatcher

// MaxMountReports is how many mount reports one heartbeat may carry: the
// manager records them in one etcd transaction (manager/store's
// MaxAuditAppend is at least this) and refuses a heartbeat with more.
const MaxMountReports = 64
