package dispatcher

// MaxMountReports is how many mount reports one heartbeat may carry: the
// manager records them in one etcd transaction (manager/store's
// MaxAuditAppend is at least this) and refuses a heartbeat with more.
const MaxMountReports = 64

// ReportBeatsPerPeriod is how many full heartbeats of reports a node may
// send in one heartbeat period: the manager records at most
// ReportBeatsPerPeriod × MaxMountReports reports per node and period
// (256 in the default 5 s: about 25 claiming containers a second, each a
// MOUNTED and a WIPED) and refuses more with ResourceExhausted; an agent
// whose queue holds more than one beat's worth beats again after a
// ReportBeatsPerPeriod-th of the period instead of a whole one. The bound
// keeps one node from filling the audit log (trimmed to a count of
// entries) with its own; with one beat a period, a node starting more than
// six claiming containers a second fell behind for good and, its queue
// full, dropped the oldest reports.
const ReportBeatsPerPeriod = 4

// MaxInventoryContainers is how many container IDs one ContainerInventory
// may carry: the most container rows a manager keeps per node
// (manager/store.MaxContainersPerNode; manager/dispatcher has a test that
// they agree). An agent holding more sends none and says so in its log;
// a manager refuses a larger one. At 2048 IDs of 64 characters an
// inventory is about 140 KB, well under the gRPC message limit.
const MaxInventoryContainers = 2048
