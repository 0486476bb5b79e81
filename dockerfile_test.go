package herald_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// nonrootUID is the user distroless's :nonroot images run as.
const nonrootUID = "65532"

// The image must hand the node a data volume it can write: the node runs
// as the nonroot user, and a new named volume takes its owner from the
// image's folder, which COPY and VOLUME leave to root unless told. No
// Docker engine is needed: the Dockerfile's instructions are checked in
// the order the builder runs them.
func TestDockerfileDataVolumeIsNonrootWritable(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if problems := checkDockerfile(string(b)); len(problems) > 0 {
		t.Fatalf("Dockerfile:\n  %s", strings.Join(problems, "\n  "))
	}
	compose, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	mounts := regexp.MustCompile(`volumes: \["[a-z0-9-]+:(/[^"]*)"\]`).FindAllStringSubmatch(string(compose), -1)
	if len(mounts) == 0 {
		t.Fatal("docker-compose.yml mounts no volume")
	}
	for _, m := range mounts {
		if m[1] != "/data" {
			t.Errorf("docker-compose.yml mounts a volume at %s, not at the image's /data", m[1])
		}
	}
}

// The checker finds each way the volume ends up root-owned, so that the
// test above cannot pass by checking nothing.
func TestCheckDockerfileCatchesRootOwnedVolumes(t *testing.T) {
	const good = `FROM golang:1.26 AS build
RUN mkdir -m 0750 /out/data
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME ["/data"]
CMD ["serve", "--data-dir", "/data"]
`
	if p := checkDockerfile(good); len(p) > 0 {
		t.Fatalf("the good file has problems: %v", p)
	}
	for _, tt := range []struct {
		name, from, to, want string
	}{
		{"no folder copied (the image before the fix)", "COPY --from=build --chown=65532:65532 /out/data /data\n", "", "no COPY makes /data"},
		{"copied without chown", "--chown=65532:65532 ", "", "not owned by 65532"},
		{"chowned to another user", "--chown=65532:65532", "--chown=1000:1000", "not owned by 65532"},
		{"folder never made", "RUN mkdir -m 0750 /out/data\n", "", "no RUN mkdir"},
		{"volume declared before the copy", "VOLUME [\"/data\"]\n", "", "before its VOLUME"},
		{"runs as root", "USER 65532:65532", "USER root", "runs as root"},
		{"data dir is not the volume", `"--data-dir", "/data"`, `"--data-dir", "/var/lib/herald"`, "not on the volume"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.Replace(good, tt.from, tt.to, 1)
			if tt.name == "volume declared before the copy" {
				bad = strings.Replace(bad, "COPY --from", "VOLUME [\"/data\"]\nCOPY --from", 1)
			}
			p := checkDockerfile(bad)
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tt.want) }) {
				t.Fatalf("problems %q; want one saying %q", p, tt.want)
			}
		})
	}
}

type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	name  string
	image string
	ins   []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions, joining
// continued lines and dropping comments: enough of the syntax for the
// checks here.
func parseDockerfile(text string) []stage {
	var stages []stage
	var line string
	for _, raw := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(raw)
		if line == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			line += cont + " "
			continue
		}
		line += trimmed
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
	}
	return stages
}

// words reads an instruction's arguments in either form: a JSON array or
// words separated by spaces.
func words(args string) []string {
	var list []string
	if json.Unmarshal([]byte(args), &list) == nil {
		return list
	}
	return strings.Fields(args)
}

// checkDockerfile lists what keeps the final image's volumes from being
// written by the user the image runs as.
func checkDockerfile(text string) []string {
	var problems []string
	stages := parseDockerfile(text)
	if len(stages) == 0 {
		return []string{"no FROM"}
	}
	final := stages[len(stages)-1]
	if !strings.HasSuffix(final.image, ":nonroot") {
		problems = append(problems, fmt.Sprintf("the final image %s is not a :nonroot image", final.image))
	}
	// Every path the image declares a volume, wherever VOLUME stands; the
	// copies that matter are those to these paths.
	var declared []string
	for _, in := range final.ins {
		if in.cmd == "VOLUME" {
			declared = append(declared, words(in.args)...)
		}
	}
	user := ""
	var volumes []string      // declared so far, in build order
	made := map[string]bool{} // volumes a COPY made, with the right owner, before VOLUME
	for _, in := range final.ins {
		switch in.cmd {
		case "USER":
			user = in.args
		case "VOLUME":
			volumes = append(volumes, words(in.args)...)
		case "COPY":
			var from, chown string
			var paths []string
			for _, a := range words(in.args) {
				switch {
				case strings.HasPrefix(a, "--from="):
					from = strings.TrimPrefix(a, "--from=")
				case strings.HasPrefix(a, "--chown="):
					chown = strings.TrimPrefix(a, "--chown=")
				case !strings.HasPrefix(a, "--"):
					paths = append(paths, a)
				}
			}
			if len(paths) != 2 {
				continue
			}
			src, dst := paths[0], strings.TrimSuffix(paths[1], "/")
			if !slices.Contains(declared, dst) || slices.Contains(volumes, dst) {
				// Not a volume, or one already declared: Docker discards
				// changes made to a volume's path after its VOLUME.
				continue
			}
			owner, _, _ := strings.Cut(chown, ":")
			if owner != nonrootUID && owner != "nonroot" {
				problems = append(problems, fmt.Sprintf("COPY to %s: not owned by %s (--chown=%q)", dst, nonrootUID, chown))
				continue
			}
			if !madeInStage(stages, from, src) {
				problems = append(problems, fmt.Sprintf("COPY --from=%s %s: no RUN mkdir of %s in stage %q", from, src, src, from))
				continue
			}
			made[dst] = true
		}
	}
	if u, _, _ := strings.Cut(user, ":"); user != "" && u != nonrootUID && u != "nonroot" {
		problems = append(problems, fmt.Sprintf("the image runs as root or another user (USER %s), not as %s", user, nonrootUID))
	}
	if len(volumes) == 0 {
		problems = append(problems, "no VOLUME for the data folder")
	}
	for _, v := range volumes {
		if !made[v] {
			problems = append(problems, fmt.Sprintf("no COPY makes %s owned by %s before its VOLUME", v, nonrootUID))
		}
	}
	for _, in := range final.ins {
		if in.cmd != "CMD" {
			continue
		}
		w := words(in.args)
		if i := slices.Index(w, "--data-dir"); i < 0 || i+1 == len(w) || !slices.Contains(volumes, w[i+1]) {
			problems = append(problems, fmt.Sprintf("CMD %v: the data dir is not on the volume %v", w, volumes))
		}
	}
	return problems
}

// madeInStage reports whether the named stage creates dir with mkdir.
func madeInStage(stages []stage, name, dir string) bool {
	for _, st := range stages[:len(stages)-1] {
		if st.name != name {
			continue
		}
		for _, in := range st.ins {
			if in.cmd != "RUN" {
				continue
			}
			w := strings.Fields(in.args)
			if slices.Contains(w, "mkdir") && slices.Contains(w, dir) {
				return true
			}
		}
	}
	return false
}
