# pyinfra side of bench/converge.sh (pyinfra 3.x; run from this directory: --chdir). Same workload
# as ../ansible/converge.yml, under /tmp/picaops-bench/pyinfra/<host>/. The template gets the
# variables Ansible and picaops provide: inventory_hostname, site, item, groups['all'].
from pyinfra import host, inventory
from pyinfra.operations import files

root = f"/tmp/picaops-bench/pyinfra/{host.name}"
all_hosts = sorted(h.name for h in inventory)

files.directory(name="Per-host directory", path=root, mode="755")

for i in range(1, 21):
    files.template(
        name=f"Template {i} of 20",
        src="templates/bench.conf.j2",
        dest=f"{root}/bench-{i}.conf",
        mode="644",
        inventory_hostname=host.name,
        site=host.data.site,
        item=i,
        groups={"all": all_hosts},
    )

files.put(name="One copied file", src="files/copied.txt", dest=f"{root}/copied.txt", mode="644")

files.line(name="One line ensured in a file", path=f"{root}/lines.txt", line="managed_by = bench")
