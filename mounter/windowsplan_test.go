package mounter

import (
	"errors"
	"strings"
	"testing"
)

func TestResolveWindowsTarget(t *testing.T) {
	long := strings.Repeat("a", windowsMaxElem)
	tests := []struct {
		target string
		want   string // empty: refused
		reason string // part of the refusal's message
	}{
		// Relative targets land under the secrets directory.
		{target: "db_pw", want: `C:\ProgramData\Docker\secrets\db_pw`},
		{target: `app\db.txt`, want: `C:\ProgramData\Docker\secrets\app\db.txt`},
		{target: "app/db.txt", want: `C:\ProgramData\Docker\secrets\app\db.txt`},
		{target: `app\\.\db`, want: `C:\ProgramData\Docker\secrets\app\db`},
		{target: `app\..\db`, want: `C:\ProgramData\Docker\secrets\db`},
		{target: long, want: WindowsSecretsDir + `\` + long},
		{target: "café", want: `C:\ProgramData\Docker\secrets\café`},
		// Absolute targets are taken as given, cleaned.
		{target: `C:\app\config.json`, want: `C:\app\config.json`},
		{target: `c:/app//config.json`, want: `C:\app\config.json`},
		{target: `C:\app\..\etc\.\x`, want: `C:\etc\x`},
		{target: `C:\ProgramData\Docker\secrets\x`, want: `C:\ProgramData\Docker\secrets\x`},
		{target: `C:\ProgramData\Docker\internalx`, want: `C:\ProgramData\Docker\internalx`},
		{target: `C:\nul\x.console`, reason: "reserved"},
		{target: `C:\not.nul`, want: `C:\not.nul`},
		{target: `C:\COM10`, want: `C:\COM10`},
		{target: `C:\console`, want: `C:\console`},

		// Escapes.
		{target: `..\x`, reason: "climbs out of"},
		{target: `a\..\..\x`, reason: "climbs out of"},
		{target: `..`, reason: "climbs out of"},
		{target: `C:\..\x`, reason: "above the drive root"},
		{target: `C:\a\..\..\x`, reason: "above the drive root"},
		// Not a file.
		{target: `.`, reason: "not a file in it"},
		{target: `C:\`, reason: "root of the drive"},
		{target: `C:\a\..`, reason: "root of the drive"},
		{target: `C:\PROGRAMDATA\docker\SECRETS`, reason: "not a file in it"},
		// UNC and device paths, with either separator.
		{target: `\\server\share\x`, reason: "UNC"},
		{target: `\\?\C:\x`, reason: "UNC"},
		{target: `\\.\PhysicalDrive0`, reason: "UNC"},
		{target: `//?/C:/x`, reason: "UNC"},
		{target: `\/server/share`, reason: "UNC"},
		// Rooted without a drive, drive-relative, other drives.
		{target: `\x`, reason: "needs a drive letter"},
		{target: `/run/secrets/x`, reason: "needs a drive letter"},
		{target: `C:x`, reason: "drive-relative"},
		{target: `C:`, reason: "drive-relative"},
		{target: `D:\x`, reason: "drive D:"},
		{target: `d:\x`, reason: "drive D:"},
		// Alternate data streams and other colons.
		{target: `C:\x:stream`, reason: "alternate data stream"},
		{target: `ab::$DATA`, reason: "alternate data stream"},
		{target: `a:b`, reason: "drive-relative"},
		{target: `1:\x`, reason: "alternate data stream"},
		// Reserved device names, with and without extensions.
		{target: "CON", reason: "reserved"},
		{target: "nul", reason: "reserved"},
		{target: "NUL.txt", reason: "reserved"},
		{target: "aux .json", reason: "reserved"},
		{target: `x\com1`, reason: "reserved"},
		{target: "LPT9.log", reason: "reserved"},
		{target: "COM¹", reason: "reserved"},
		{target: "conin$", reason: "reserved"},
		{target: `C:\Prn\x`, reason: "reserved"},
		// Names Windows would change or not accept.
		{target: "x.", reason: "dot or a space"},
		{target: `x \y`, reason: "dot or a space"},
		{target: `a*b`, reason: "does not allow"},
		{target: `a?b`, reason: "does not allow"},
		{target: `a<b`, reason: "does not allow"},
		{target: `a|b`, reason: "does not allow"},
		{target: `a"b`, reason: "does not allow"},
		{target: "a\x00b", reason: "control character"},
		{target: "a\nb", reason: "control character"},
		{target: "a\x7fb", reason: "control character"},
		{target: long + "a", reason: "longer than 255"},
		{target: strings.Repeat(`abcdefgh\`, 4000), reason: "longer than 32767"},
		{target: "", reason: "empty"},
		// The internal directory and the directories that hold it.
		{target: `C:\ProgramData\Docker\internal\secrets\x`, reason: "overlaps"},
		{target: `c:\programdata\docker\INTERNAL\secrets`, reason: "overlaps"},
		{target: `C:\ProgramData\Docker\internal`, reason: "overlaps"},
		{target: `C:\ProgramData`, reason: "overlaps"},
		{target: `..\internal\secrets\x`, reason: "climbs out of"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			got, err := ResolveWindowsTarget(tt.target)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ResolveWindowsTarget(%q) = %q, want an error with %q", tt.target, got, tt.reason)
				}
				if !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("ResolveWindowsTarget(%q) error %q, want it to say %q", tt.target, err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveWindowsTarget(%q): %v", tt.target, err)
			}
			if got != tt.want {
				t.Fatalf("ResolveWindowsTarget(%q) = %q, want %q", tt.target, got, tt.want)
			}
		})
	}
}

func winGrant(name, target string) Grant {
	return Grant{SecretID: "id" + strings.ReplaceAll(name, "_", ""), SecretName: name, Target: target, Size: 10}
}

func TestNewWindowsPlan(t *testing.T) {
	plan, err := newWindowsPlan([]Grant{
		winGrant("db_pw", ""),
		winGrant("api_key", `C:\app\key`),
		{SecretID: "iddbpw", SecretName: "db_pw", Target: `C:\app\db`, Size: 10},
		{SecretID: "iddbpw", SecretName: "db_pw", Target: `other`, Size: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	if plan.OS != Windows || plan.Size != 40 || len(plan.Files) != 4 {
		t.Fatalf("plan = %+v", plan)
	}
	want := []File{
		{SecretID: "iddbpw", SecretName: "db_pw", Name: "iddbpw", Target: `C:\ProgramData\Docker\secrets\db_pw`, Mode: 0o444, Size: 10},
		{SecretID: "idapikey", SecretName: "api_key", Name: "idapikey", Target: `C:\app\key`, Mode: 0o444, Size: 10},
		{SecretID: "iddbpw", SecretName: "db_pw", Name: "iddbpw~2", Target: `C:\app\db`, Mode: 0o444, Size: 10},
		{SecretID: "iddbpw", SecretName: "db_pw", Name: "iddbpw~3", Target: `C:\ProgramData\Docker\secrets\other`, Mode: 0o444, Size: 10},
	}
	for i, f := range plan.Files {
		if f != want[i] {
			t.Errorf("file %d = %+v, want %+v", i, f, want[i])
		}
	}
}

func TestNewWindowsPlanRefuses(t *testing.T) {
	tests := []struct {
		name   string
		grants []Grant
		secret string
		field  string
		reason string
	}{
		{
			name:   "uid",
			grants: []Grant{{SecretID: "a", SecretName: "a", UID: "0"}},
			secret: "a", field: "uid", reason: "no uid, gid or mode",
		},
		{
			name:   "gid",
			grants: []Grant{{SecretID: "a", SecretName: "a", GID: "1000"}},
			secret: "a", field: "gid", reason: "no uid, gid or mode",
		},
		{
			name:   "mode",
			grants: []Grant{{SecretID: "a", SecretName: "a", Mode: 0o400}},
			secret: "a", field: "mode", reason: "no uid, gid or mode",
		},
		{
			name:   "same target",
			grants: []Grant{winGrant("a", `C:\x`), winGrant("b", `C:\x`)},
			secret: "b", field: "target", reason: `secret "a" already has this target`,
		},
		{
			name:   "same target in another case",
			grants: []Grant{winGrant("a", `C:\App\X`), winGrant("b", `c:/app/x`)},
			secret: "b", field: "target", reason: "case-insensitive",
		},
		{
			name:   "default target against an absolute one",
			grants: []Grant{winGrant("a", ""), winGrant("b", `C:\ProgramData\Docker\Secrets\A`)},
			secret: "b", field: "target", reason: "already has",
		},
		{
			name:   "target inside another target",
			grants: []Grant{winGrant("a", `C:\app`), winGrant("b", `C:\APP\x\y`)},
			secret: "b", field: "target", reason: `inside "C:\\APP", the target of secret "a"`,
		},
		{
			name:   "target holding another target",
			grants: []Grant{winGrant("b", `app\x\y`), winGrant("a", `App\x`)},
			secret: "b", field: "target", reason: "the target of secret \"a\"",
		},
		{
			name:   "bad target",
			grants: []Grant{winGrant("a", `C:\x:y`)},
			secret: "a", field: "target", reason: "alternate data stream",
		},
		{
			name:   "reserved ID",
			grants: []Grant{{SecretID: "nul", SecretName: "a", Size: 1}},
			secret: "a", field: "id", reason: "plain file name",
		},
		{
			name:   "reserved secret name as default target",
			grants: []Grant{{SecretID: "x1", SecretName: "aux", Size: 1}},
			secret: "aux", field: "target", reason: "reserved",
		},
		{
			name:   "ID ending in a dot",
			grants: []Grant{{SecretID: "abc.", SecretName: "a", Size: 1}},
			secret: "a", field: "id", reason: "plain file name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := newWindowsPlan(tt.grants)
			if err == nil {
				t.Fatalf("newWindowsPlan = %+v, want an error", plan)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
			}
			if ve.Secret != tt.secret || ve.Field != tt.field || !strings.Contains(ve.Reason, tt.reason) {
				t.Fatalf("error %+v, want secret %q field %q reason with %q", ve, tt.secret, tt.field, tt.reason)
			}
			if ValidateWindowsGrants(tt.grants) == nil {
				t.Fatal("ValidateWindowsGrants accepted what newWindowsPlan refuses")
			}
		})
	}
}

func TestNewPlanWindows(t *testing.T) {
	// NewPlan routes Windows grants here after the common checks.
	if _, err := NewPlan(Windows, []Grant{{SecretID: "abc", SecretName: "abc", Size: 3, UID: "0"}}); err == nil ||
		!strings.Contains(err.Error(), "uid") {
		t.Fatalf("NewPlan(Windows) with a uid: %v, want a uid error", err)
	}
	plan, err := NewPlan(Windows, []Grant{{SecretID: "abc", SecretName: "abc", Size: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Files[0].Target; got != WindowsSecretsDir+`\abc` {
		t.Fatalf("target %q", got)
	}
}

func TestCheckWindowsName(t *testing.T) {
	for _, name := range []string{"a", "a.b", "a b", "0abcdef~2", "café", ".profile"} {
		if err := CheckWindowsName(name); err != nil {
			t.Errorf("CheckWindowsName(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a.", "a ", "NUL", "a:b", "a*", "a\x00", `a\b`, "a/b"} {
		if CheckWindowsName(name) == nil {
			t.Errorf("CheckWindowsName(%q) accepted it", name)
		}
	}
}

func TestIsWindowsReserved(t *testing.T) {
	for _, name := range []string{"con", "CON", "Con.txt", "con .x.y", "PRN", "aux", "NUL", "COM1", "com9.a", "LPT0", "lpt³", "CONOUT$", "clock$"} {
		if !isWindowsReserved(name) {
			t.Errorf("isWindowsReserved(%q) = false", name)
		}
	}
	for _, name := range []string{"", "cons", "xcon", "COM", "COM10", "LPT", "LPTX", "nul_", "a.con", "com⁴", " con"} {
		if isWindowsReserved(name) {
			t.Errorf("isWindowsReserved(%q) = true", name)
		}
	}
}

// FuzzResolveWindowsTarget checks that whatever the input, an accepted target
// is canonical: absolute on C:, backslashes only, no empty, "." or ".."
// components, no colon past the drive, outside the internal directory, and
// resolving it again changes nothing.
func FuzzResolveWindowsTarget(f *testing.F) {
	for _, s := range []string{"db_pw", `C:\app\x`, `c:/a/../b`, `..\x`, `\\?\C:\x`, `C:x`, `x:y`, "NUL.txt",
		`C:\ProgramData\Docker\internal\secrets\a`, "a.", `\x`, "a/./b", "é/ß"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		got, err := ResolveWindowsTarget(target)
		if err != nil {
			if got != "" {
				t.Fatalf("error %v with result %q", err, got)
			}
			return
		}
		if !strings.HasPrefix(got, `C:\`) || strings.ContainsRune(got, '/') || strings.ContainsRune(got[2:], ':') {
			t.Fatalf("%q -> %q: not an absolute C: path", target, got)
		}
		for _, e := range strings.Split(got[len(`C:\`):], `\`) {
			if e == "" || e == "." || e == ".." || isWindowsReserved(e) {
				t.Fatalf("%q -> %q: bad component %q", target, got, e)
			}
		}
		if windowsPathOverlaps(got, WindowsInternalSecretsDir) {
			t.Fatalf("%q -> %q: overlaps the internal directory", target, got)
		}
		again, err := ResolveWindowsTarget(got)
		if err != nil || again != got {
			t.Fatalf("%q -> %q -> (%q, %v): not idempotent", target, got, again, err)
		}
	})
}
