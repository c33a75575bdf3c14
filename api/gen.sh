#!/bin/sh
# Regenerates the Go code from the .proto files (make proto).
set -eu
cd "$(dirname "$0")"
protoc -I . \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	types/types.proto admin/admin.proto dispatcher/dispatcher.proto ca/ca.proto agent/agent.proto cluster/cluster.proto
