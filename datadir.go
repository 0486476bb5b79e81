package herald

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/heraldhq/herald/multiraft"
)

// identityFile records which node and cluster a data dir belongs to, so a
// node is never started on another's data.
const identityFile = "herald-node.json"

type identity struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// checkDataDir makes sure the data dir is usable and is this node's: Start
// runs it before it opens anything in it, so no embedder can start a node
// on another node's data.
func checkDataDir(dir, nodeID string, boot *multiraft.BootstrapSpec) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("herald: data dir %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("herald: data dir %s is not writable: %w", dir, err)
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())
	id, err := readIdentity(dir)
	if err != nil {
		return err
	}
	switch {
	case id == nil:
		return writeIdentity(dir, identity{NodeID: nodeID})
	case id.NodeID != nodeID:
		return fmt.Errorf("herald: data dir %s belongs to node %s, not %s", dir, id.NodeID, nodeID)
	case boot != nil && id.ClusterID != "" && id.ClusterID != boot.ClusterID:
		return fmt.Errorf("herald: data dir %s belongs to cluster %s, not %s", dir, id.ClusterID, boot.ClusterID)
	}
	return nil
}

func readIdentity(dir string) (*identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("herald: data dir %s: %w", dir, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil || id.NodeID == "" {
		return nil, fmt.Errorf("herald: data dir %s: %s is damaged (%v); it names the node the directory belongs to", dir, identityFile, err)
	}
	return &id, nil
}

// writeIdentity replaces the identity file durably: a power cut after it
// returns must not leave the name pointing at an empty file (the data was
// never fsynced) nor lose the name (the directory was never fsynced), or
// the node refuses its own data dir at the next start.
func writeIdentity(dir string, id identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	tmp := filepath.Join(dir, identityFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, identityFile)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// recordCluster notes in the data dir the cluster the node belongs to, once
// it knows it, so that a later start with another cluster's bootstrap spec
// is refused.
func (n *Node) recordCluster() {
	cid := n.host.Cluster().ClusterID
	if cid == "" {
		return
	}
	if err := writeIdentity(n.cfg.DataDir, identity{NodeID: n.cfg.NodeID, ClusterID: cid}); err != nil {
		n.cfg.Logger.Warn("could not record the node's cluster in its data dir", "err", err)
	}
}
