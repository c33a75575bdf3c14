package admin

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/api/validation"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "A9", "db_pw", "db-pw", "tls.crt", "a_-.b", strings.Repeat("x", 64)}
	bad := []string{"", "-a", "a-", "_a", ".a", "a.", "a b", "a/b", "é", "a\x00", strings.Repeat("x", 65)}
	for _, n := range good {
		if err := validateName("secret", n); err != nil {
			t.Errorf("%q refused: %v", n, err)
		}
	}
	for _, n := range bad {
		if err := validateName("secret", n); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%q: %v", n, err)
		}
	}
}

func TestValidateData(t *testing.T) {
	for size, ok := range map[int]bool{0: false, 1: true, 511999: true, 512000: false, 1 << 20: false} {
		if err := validateData(size); (err == nil) != ok {
			t.Errorf("size %d: %v", size, err)
		}
	}
}

func FuzzValidateServiceSpec(f *testing.F) {
	f.Add("web", "db", "", "", "", uint32(0), "node.id==x", "")
	f.Add("web", "db", "../x", "1", "2", uint32(0o400), "node.labels.a!=b", "k8s.namespace==a")
	f.Add("w", "s", "/etc/x", "4294967294", "0", uint32(0o777), "node.platform.os==windows", "containerd.namespace!=default")
	f.Fuzz(func(t *testing.T, name, secret, target, uid, gid string, mode uint32, cons, rule string) {
		spec := &types.ServiceSpec{
			Name:      name,
			Secrets:   []*types.SecretReference{{SecretId: "abc", SecretName: secret, Target: &types.FileTarget{Name: target, Uid: uid, Gid: gid, Mode: mode}}},
			Placement: &types.Placement{Constraints: []string{cons}},
		}
		if rule != "" {
			spec.ClaimRules = []string{rule, rule}
		}
		err := validateServiceSpec(spec)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refusal with code %v: %v", status.Code(err), err)
			}
			return
		}
		// Whatever passes keeps the promises the nodes rely on.
		if mode > 0o777 {
			t.Fatalf("mode %o accepted", mode)
		}
		for _, id := range []string{uid, gid} {
			if id == "" {
				continue
			}
			if v, err := strconv.ParseUint(id, 10, 32); err != nil || v > 1<<32-2 {
				t.Fatalf("id %q accepted", id)
			}
		}
		for _, e := range strings.Split(target, "/") {
			if e == ".." {
				t.Fatalf("target %q accepted", target)
			}
		}
		if !validation.ValidName(name) {
			t.Fatalf("service name %q accepted", name)
		}
		// Claim rules are stored canonical, once, and read back the same.
		if rs, err := claimrule.ParseSet(spec.ClaimRules); err != nil || len(spec.ClaimRules) > 1 || !slices.Equal(rs.Strings(), spec.ClaimRules) {
			t.Fatalf("claim rules %q stored as %q (%v)", rule, spec.ClaimRules, err)
		}
	})
}
