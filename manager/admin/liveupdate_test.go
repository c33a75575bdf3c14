package admin_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/store"
)

func signalRef(source, signal string) *types.SecretReference {
	r := ref(source, "", "", "", 0)
	r.Signal = signal
	return r
}

// TestSignalsValidated: a bad signal, a signal without live update and a
// signal for Windows nodes are refused on create and on update with
// InvalidArgument naming the reference, and nothing is written.
func TestSignalsValidated(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "pw", []byte("x"))
	created, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("web", []*types.SecretReference{ref("pw", "", "", "", 0)})})
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, e)
	for _, tc := range []struct {
		name   string
		signal string
		live   bool
		cons   []string
		msg    string
	}{
		{"unknown signal", "SIGFOO", true, nil, "secret reference 'pw': invalid signal: SIGFOO"},
		{"out of range", "65", true, nil, "secret reference 'pw': invalid signal: 65"},
		{"kill", "SIGKILL", true, nil, "may not kill or stop the container"},
		{"stop", "19", true, nil, "may not kill or stop the container"},
		{"no live update", "SIGHUP", false, nil, "secret reference 'pw': signal=SIGHUP needs --live-update"},
		{"windows", "HUP", true, []string{"node.platform.os==windows"}, "secret reference 'pw': signal=HUP: Windows containers cannot take signals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := svcSpec("new", []*types.SecretReference{signalRef("pw", tc.signal)}, tc.cons...)
			spec.LiveUpdate = tc.live
			_, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("create: %v, want InvalidArgument saying %q", err, tc.msg)
			}
			spec.Name = "web"
			_, err = e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "web", Version: created.Service.Meta.Version, Spec: spec})
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("update: %v, want InvalidArgument saying %q", err, tc.msg)
			}
			// The CLI checks with the same rule before it sends.
			if err := admin.CheckSignals(spec); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("CheckSignals: %v, want %q", err, tc.msg)
			}
		})
	}
	if after := dump(t, e); after != before {
		t.Fatalf("store changed by refused calls:\nbefore %s\nafter  %s", before, after)
	}
}

// TestLiveUpdateRoundTrip: live update and signals are stored as given
// (the signal as the user wrote it), returned by get, and changed by
// update.
func TestLiveUpdateRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "pw", []byte("x"))
	e.createSecret(t, "cert", []byte("y"))
	spec := svcSpec("web", []*types.SecretReference{signalRef("pw", "hup"), signalRef("cert", "")})
	spec.LiveUpdate = true
	resp, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if s := got.Service.Spec; !s.LiveUpdate || s.Secrets[0].Signal != "hup" || s.Secrets[1].Signal != "" {
		t.Fatalf("stored %v, want live update with signal hup on pw only", s)
	}
	off := svcSpec("web", []*types.SecretReference{ref("pw", "", "", "", 0)})
	if _, err := e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "web", Version: resp.Service.Meta.Version, Spec: off}); err != nil {
		t.Fatal(err)
	}
	got, err = e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Service.Spec.LiveUpdate {
		t.Fatal("live update still on after an update that turned it off")
	}
}

// TestListServiceContainers: the rows the nodes reported, by service name,
// with the node's hostname, a removed node marked, and pages; removing a
// node removes its rows.
func TestListServiceContainers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{Nodes: &fakeRevoker{}}, "")
	e.createSecret(t, "pw", []byte("x"))
	svc, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("web", []*types.SecretReference{ref("pw", "", "", "", 0)})})
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.store.CreateNode(ctx, &types.Node{Description: &types.NodeDescription{Hostname: "host-a", Platform: &types.Platform{Os: "linux"}}})
	if err != nil {
		t.Fatal(err)
	}
	pwID := svc.Service.Spec.Secrets[0].SecretId
	for node, cids := range map[string][]string{n.Id: {"c1", "c2"}, "gone-node": {"c3"}} {
		var rs []store.ContainerReport
		for _, c := range cids {
			rs = append(rs, store.ContainerReport{ContainerID: c, ServiceID: svc.Service.Id, State: store.ContainerMounted,
				Secrets: []store.ContainerSecret{{ID: pwID, Name: "pw"}}})
		}
		if _, err := e.store.ApplyContainerReports(ctx, node, rs); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for page := 0; ; page++ {
		resp, err := e.client.ListServiceContainers(ctx, &adminapi.ListServiceContainersRequest{NameOrId: "web", After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Service.Id != svc.Service.Id {
			t.Fatalf("service %v, want web", resp.Service)
		}
		for _, c := range resp.Containers {
			if c.MountedAt == nil || c.UpdatedAt == nil || len(c.Secrets) != 1 || c.Secrets[0].SecretId != pwID || c.State != "mounted" {
				t.Fatalf("row %v", c)
			}
			got = append(got, c.ContainerId+"@"+c.NodeHostname+map[bool]string{true: " removed"}[c.NodeRemoved])
		}
		if after = resp.NextPage; after == "" {
			break
		}
		if page > 2 {
			t.Fatal("no end of pages")
		}
	}
	if strings.Join(got, ",") != strings.Join(sortedRows(n.Id, "gone-node"), ",") {
		t.Fatalf("rows %q", got)
	}
	if _, err := e.client.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: n.Id, Force: true}); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.ListServiceContainers(ctx, &adminapi.ListServiceContainersRequest{NameOrId: "web"})
	if err != nil || len(resp.Containers) != 1 || resp.Containers[0].ContainerId != "c3" {
		t.Fatalf("after removing the node: %v, %v; want c3 only", resp, err)
	}
	if _, err := e.client.ListServiceContainers(ctx, &adminapi.ListServiceContainersRequest{NameOrId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v, want NotFound", err)
	}
	if _, err := e.client.ListServiceContainers(ctx, &adminapi.ListServiceContainersRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no service: %v, want InvalidArgument", err)
	}
}

// sortedRows is the expected order: by node ID, then container.
func sortedRows(live, gone string) []string {
	a := []string{"c1@host-a", "c2@host-a"}
	b := []string{"c3@ removed"}
	if live < gone {
		return append(a, b...)
	}
	return append(b, a...)
}
