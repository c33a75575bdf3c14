package admin

import (
	"context"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/internal/buildinfo"
)

// Version reports this manager's build.
func (s *Server) Version(context.Context, *adminapi.VersionRequest) (*adminapi.VersionResponse, error) {
	i := buildinfo.Get()
	return &adminapi.VersionResponse{
		Version: i.Version, Commit: i.Commit, Modified: i.Modified, GoVersion: i.GoVersion,
		Os: i.OS, Arch: i.Arch, BuildTime: i.BuildTime,
	}, nil
}
