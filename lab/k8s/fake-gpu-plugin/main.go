// fake-gpu-plugin is a real kubelet device plugin for devices that are not GPUs: it advertises
// one extended resource (nvidia.com/gpu by default) with one device per given file, and on
// Allocate hands the chosen files to the container plus NVIDIA_VISIBLE_DEVICES, the way the
// NVIDIA plugin does, so pods requesting GPUs are scheduled and admitted on the lab node.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices map[string]string // device ID -> host path
}

var trailingDigits = regexp.MustCompile(`[0-9]+$`)

func (p *plugin) list() []*pluginapi.Device {
	ids := make([]string, 0, len(p.devices))
	for id := range p.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*pluginapi.Device, 0, len(ids))
	for _, id := range ids {
		health := pluginapi.Healthy
		if _, err := os.Stat(p.devices[id]); err != nil {
			health = pluginapi.Unhealthy
		}
		out = append(out, &pluginapi.Device{ID: id, Health: health})
	}
	return out
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	last := ""
	for {
		devs := p.list()
		key := ""
		for _, d := range devs {
			key += d.ID + "=" + d.Health + ";"
		}
		if key != last {
			if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
				return err
			}
			last = key
		}
		select {
		case <-s.Context().Done():
			return nil
		case <-time.After(10 * time.Second):
		}
	}
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		cr := &pluginapi.ContainerAllocateResponse{Envs: map[string]string{}}
		var idx []string
		for _, id := range c.DevicesIds {
			path := p.devices[id]
			cr.Devices = append(cr.Devices, &pluginapi.DeviceSpec{HostPath: path, ContainerPath: path, Permissions: "rw"})
			idx = append(idx, trailingDigits.FindString(id))
		}
		cr.Envs["NVIDIA_VISIBLE_DEVICES"] = strings.Join(idx, ",")
		resp.ContainerResponses = append(resp.ContainerResponses, cr)
		log.Printf("allocate %v -> NVIDIA_VISIBLE_DEVICES=%s", c.DevicesIds, cr.Envs["NVIDIA_VISIBLE_DEVICES"])
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func register(dir, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: resource,
		Options: &pluginapi.DevicePluginOptions{},
	})
	return err
}

func main() {
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	files := flag.String("devices", "/dev/fakegpu0,/dev/fakegpu1,/dev/fakegpu2,/dev/fakegpu3", "comma- or space-separated device files")
	dir := flag.String("dir", pluginapi.DevicePluginPath, "kubelet device-plugin directory")
	flag.Parse()

	p := &plugin{devices: map[string]string{}}
	for _, f := range strings.FieldsFunc(*files, func(r rune) bool { return r == ',' || r == ' ' }) {
		p.devices[filepath.Base(f)] = f
	}
	endpoint := "fake-gpu.sock"
	sock := filepath.Join(*dir, endpoint)

	// The kubelet wipes the plugin directory when it restarts; that is the signal to serve on a
	// fresh socket and register again. Polling keeps this independent of inotify.
	for {
		_ = os.Remove(sock)
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			log.Fatal(err)
		}
		lis, err := net.Listen("unix", sock)
		if err != nil {
			log.Fatal(err)
		}
		srv := grpc.NewServer()
		pluginapi.RegisterDevicePluginServer(srv, p)
		go func() { _ = srv.Serve(lis) }()
		for {
			if err := register(*dir, endpoint, *resource); err != nil {
				log.Printf("register with kubelet: %v (retrying)", err)
				time.Sleep(3 * time.Second)
				continue
			}
			log.Printf("registered %s with %d devices", *resource, len(p.devices))
			break
		}
		for {
			time.Sleep(2 * time.Second)
			if _, err := os.Stat(sock); err != nil {
				log.Printf("socket %s gone (kubelet restarted?): serving again", sock)
				break
			}
		}
		srv.Stop()
	}
}
