package dispatcher

// MaxMountReports is how many mount reports one heartbeat may carry: the
// manager records them in one etcd transaction (manager/store's
// MaxAuditAppend is at least this) and refuses a heartbeat with more.
const MaxMountReports = 64

// MaxInventoryContainers is how many container IDs one ContainerInventory
// may carry: the most container rows a manager keeps per node
// (manager/store.MaxContainersPerNode; manager/dispatcher has a test that
// they agree). An agent holding more sends none and says so in its log;
// a manager refuses a larger one. At 2048 IDs of 64 characters an
// inventory is about 140 KB, well under the gRPC message limit.
const MaxInventoryContainers = 2048
