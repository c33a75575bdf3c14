package mounter

import (
	"errors"
	"io/fs"
	"path"
	"strings"
	"testing"
)

func grant(name string, mod ...func(*Grant)) Grant {
	g := Grant{SecretID: "id" + name, SecretName: name, Size: 10}
	for _, m := range mod {
		m(&g)
	}
	return g
}

func target(t string) func(*Grant) { return func(g *Grant) { g.Target = t } }

func TestNewPlanLinux(t *testing.T) {
	tests := []struct {
		name   string
		grants []Grant
		want   []File
	}{
		{"empty", nil, []File{}},
		{"default target and owner", []Grant{grant("db_pw")}, []File{
			{SecretID: "iddb_pw", SecretName: "db_pw", Name: "iddb_pw", Target: "/run/secrets/db_pw", Mode: 0o444, Size: 10},
		}},
		{"relative, nested and absolute targets", []Grant{
			grant("a", target("conf/a.pem")),
			grant("b", target("/etc//ssl/./b.pem")),
			grant("c", target("./c")),
		}, []File{
			{SecretID: "ida", SecretName: "a", Name: "ida", Target: "/run/secrets/conf/a.pem", Mode: 0o444, Size: 10},
			{SecretID: "idb", SecretName: "b", Name: "idb", Target: "/etc/ssl/b.pem", Mode: 0o444, Size: 10},
			{SecretID: "idc", SecretName: "c", Name: "idc", Target: "/run/secrets/c", Mode: 0o444, Size: 10},
		}},
		{"uid gid mode", []Grant{grant("a", func(g *Grant) { g.UID, g.GID, g.Mode = "1000", "4294967294", 0o400 })}, []File{
			{SecretID: "ida", SecretName: "a", Name: "ida", Target: "/run/secrets/a", UID: 1000, GID: 4294967294, Mode: 0o400, Size: 10},
		}},
		{"same secret twice gets distinct names", []Grant{
			grant("a"),
			grant("a", target("/etc/a")),
			grant("a", target("x/a")),
		}, []File{
			{SecretID: "ida", SecretName: "a", Name: "ida", Target: "/run/secrets/a", Mode: 0o444, Size: 10},
			{SecretID: "ida", SecretName: "a", Name: "ida~2", Target: "/etc/a", Mode: 0o444, Size: 10},
			{SecretID: "ida", SecretName: "a", Name: "ida~3", Target: "/run/secrets/x/a", Mode: 0o444, Size: 10},
		}},
		{"same base name, different dirs", []Grant{grant("a", target("/x/k")), grant("b", target("/y/k"))}, []File{
			{SecretID: "ida", SecretName: "a", Name: "ida", Target: "/x/k", Mode: 0o444, Size: 10},
			{SecretID: "idb", SecretName: "b", Name: "idb", Target: "/y/k", Mode: 0o444, Size: 10},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPlan(Linux, tt.grants)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			if p.OS != Linux {
				t.Errorf("OS = %q", p.OS)
			}
			if len(p.Files) != len(tt.want) {
				t.Fatalf("files = %+v, want %+v", p.Files, tt.want)
			}
			var size int64
			for i := range tt.want {
				if p.Files[i] != tt.want[i] {
					t.Errorf("file %d = %+v, want %+v", i, p.Files[i], tt.want[i])
				}
				size += tt.want[i].Size
			}
			if p.Size != size {
				t.Errorf("Size = %d, want %d", p.Size, size)
			}
		})
	}
}

func TestNewPlanRefuses(t *testing.T) {
	tests := []struct {
		name   string
		os     OS
		grants []Grant
		field  string
		secret string
	}{
		{"dotdot escape", Linux, []Grant{grant("a", target("../../etc/shadow"))}, "target", "a"},
		{"dotdot inside absolute", Linux, []Grant{grant("a", target("/run/secrets/../x"))}, "target", "a"},
		{"dotdot harmless still refused", Linux, []Grant{grant("a", target("x/../y"))}, "target", "a"},
		{"nul", Linux, []Grant{grant("a", target("a\x00b"))}, "target", "a"},
		{"newline", Linux, []Grant{grant("a", target("a\nb"))}, "target", "a"},
		{"trailing slash", Linux, []Grant{grant("a", target("dir/"))}, "target", "a"},
		{"root", Linux, []Grant{grant("a", target("/"))}, "target", "a"},
		{"root by cleaning", Linux, []Grant{grant("a", target("//./"))}, "target", "a"},
		{"secrets dir", Linux, []Grant{grant("a", target("/run/secrets"))}, "target", "a"},
		{"secrets dir relative", Linux, []Grant{grant("a", target("."))}, "target", "a"},
		{"run", Linux, []Grant{grant("a", target("/run"))}, "target", "a"},
		{"proc", Linux, []Grant{grant("a", target("/proc/sys/kernel/x"))}, "target", "a"},
		{"sys", Linux, []Grant{grant("a", target("/sys"))}, "target", "a"},
		{"long element", Linux, []Grant{grant("a", target(strings.Repeat("x", 256)))}, "target", "a"},
		{"long path", Linux, []Grant{grant("a", target(strings.Repeat("x/", 2048)+"x"))}, "target", "a"},
		{"duplicate target", Linux, []Grant{grant("a", target("k")), grant("b", target("/run/secrets/k"))}, "target", "b"},
		{"duplicate after cleaning", Linux, []Grant{grant("a", target("/etc/k")), grant("b", target("/etc/./k"))}, "target", "b"},
		{"default vs explicit", Linux, []Grant{grant("a"), grant("b", target("a"))}, "target", "b"},
		{"file then dir", Linux, []Grant{grant("a", target("/x/k")), grant("b", target("/x/k/z"))}, "target", "b"},
		{"dir then file", Linux, []Grant{grant("a", target("/x/k/z")), grant("b", target("/x/k"))}, "target", "b"},
		{"uid negative", Linux, []Grant{grant("a", func(g *Grant) { g.UID = "-1" })}, "uid", "a"},
		{"uid plus", Linux, []Grant{grant("a", func(g *Grant) { g.UID = "+1" })}, "uid", "a"},
		{"uid name", Linux, []Grant{grant("a", func(g *Grant) { g.UID = "root" })}, "uid", "a"},
		{"uid max", Linux, []Grant{grant("a", func(g *Grant) { g.UID = "4294967295" })}, "uid", "a"},
		{"uid overflow", Linux, []Grant{grant("a", func(g *Grant) { g.UID = "99999999999" })}, "uid", "a"},
		{"gid hex", Linux, []Grant{grant("a", func(g *Grant) { g.GID = "0x10" })}, "gid", "a"},
		{"mode setuid", Linux, []Grant{grant("a", func(g *Grant) { g.Mode = 0o4755 })}, "mode", "a"},
		{"mode too big", Linux, []Grant{grant("a", func(g *Grant) { g.Mode = 0o1000 })}, "mode", "a"},
		{"size zero", Linux, []Grant{grant("a", func(g *Grant) { g.Size = 0 })}, "size", "a"},
		{"size 500KiB", Linux, []Grant{grant("a", func(g *Grant) { g.Size = 512000 })}, "size", "a"},
		{"id slash", Linux, []Grant{grant("a", func(g *Grant) { g.SecretID = "a/b" })}, "id", "a"},
		{"id dotdot", Linux, []Grant{grant("a", func(g *Grant) { g.SecretID = ".." })}, "id", "a"},
		{"id empty", Linux, []Grant{grant("a", func(g *Grant) { g.SecretID = "" })}, "id", "a"},
		{"id tilde", Linux, []Grant{grant("a", func(g *Grant) { g.SecretID = "x~2" })}, "id", "a"},
		{"name dotdot", Linux, []Grant{grant("..")}, "name", "id.."},
		{"name slash", Linux, []Grant{grant("a/b", func(g *Grant) { g.SecretID = "idab" })}, "name", "idab"},
		{"name too long", Linux, []Grant{grant(strings.Repeat("n", 65))}, "name", "id" + strings.Repeat("n", 65)},
		{"unknown os", OS("plan9"), []Grant{grant("a")}, "os", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPlan(tt.os, tt.grants)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("NewPlan = %+v, %v; want a *ValidationError", p, err)
			}
			if ve.Field != tt.field || ve.Secret != tt.secret {
				t.Errorf("error %q: field %q secret %q, want field %q secret %q", err, ve.Field, ve.Secret, tt.field, tt.secret)
			}
		})
	}
}

func TestNewPlanTotalCap(t *testing.T) {
	big := func(n string) Grant { return grant(n, func(g *Grant) { g.Size = MaxSecretSize - 1 }) }
	l := Limits{MaxTotalSize: 2 * (MaxSecretSize - 1)}
	if _, err := l.NewPlan(Linux, []Grant{big("a"), big("b")}); err != nil {
		t.Fatalf("at the cap: %v", err)
	}
	_, err := l.NewPlan(Linux, []Grant{big("a"), big("b"), grant("c")})
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "size" {
		t.Fatalf("over the cap: %v", err)
	}
	// The default cap holds 64 MiB: 131 secrets of 500 KiB are refused.
	var gs []Grant
	for i := 0; i < 135; i++ {
		gs = append(gs, big("s"+strings.Repeat("x", i%60)+string(rune('a'+i%26))))
		gs[i].SecretID = "id" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		gs[i].Target = gs[i].SecretID
	}
	if _, err := NewPlan(Linux, gs); !errors.As(err, &ve) || ve.Field != "size" {
		t.Fatalf("over the default cap: %v", err)
	}
}

func TestValidationErrorMessage(t *testing.T) {
	_, err := NewPlan(Linux, []Grant{grant("db_pw", target("../../etc/shadow"))})
	want := `secret "db_pw": invalid target "../../etc/shadow": a target holds no ".." element`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

// FuzzNewPlan checks the invariants every accepted Linux plan must hold,
// whatever the grants: absolute clean targets, no ".." anywhere, no two files
// on one target or one under another, unique storage names, modes within
// 0777, and a size that adds up.
func FuzzNewPlan(f *testing.F) {
	f.Add("a", "id1", "", "", "", uint32(0), int64(1), "b", "id2", "/etc/x", uint32(0o400))
	f.Add("a", "id1", "../../etc/shadow", "0", "0", uint32(0o777), int64(100), "a", "id1", "a", uint32(0))
	f.Add("x", "i", "/run/secrets/../../x", "1", "2", uint32(0o4000), int64(511999), "y", "i", "/x/y", uint32(1))
	f.Add("x", "i", "k/", "4294967295", "", uint32(0), int64(3), "y", "j", "k", uint32(0o444))
	f.Fuzz(func(t *testing.T, name1, id1, target1, uid, gid string, mode1 uint32, size int64, name2, id2, target2 string, mode2 uint32) {
		grants := []Grant{
			{SecretID: id1, SecretName: name1, Target: target1, UID: uid, GID: gid, Mode: mode1, Size: size},
			{SecretID: id2, SecretName: name2, Target: target2, UID: gid, GID: uid, Mode: mode2, Size: size},
		}
		p, err := NewPlan(Linux, grants)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			return
		}
		if len(p.Files) != 2 || p.Size != 2*size {
			t.Fatalf("plan %+v does not match the grants", p)
		}
		names := map[string]bool{}
		for _, fl := range p.Files {
			if !path.IsAbs(fl.Target) || path.Clean(fl.Target) != fl.Target || fl.Target == "/" {
				t.Errorf("target %q is not absolute and clean", fl.Target)
			}
			for _, e := range strings.Split(fl.Target, "/") {
				if e == ".." {
					t.Errorf("target %q holds ..", fl.Target)
				}
			}
			if strings.ContainsAny(fl.Name, "/\x00") || fl.Name == "" || fl.Name[0] == '.' || names[fl.Name] {
				t.Errorf("storage name %q unsafe or not unique", fl.Name)
			}
			names[fl.Name] = true
			if fl.Mode&^fs.FileMode(0o777) != 0 || fl.Mode == 0 {
				t.Errorf("mode %v", fl.Mode)
			}
			if fl.UID == 1<<32-1 || fl.GID == 1<<32-1 {
				t.Errorf("uid/gid -1 accepted")
			}
		}
		a, b := p.Files[0].Target, p.Files[1].Target
		if a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/") {
			t.Errorf("targets %q and %q conflict", a, b)
		}
	})
}
