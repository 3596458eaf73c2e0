"""Location of the playbooks, roles and inventories that oneclick runs.

A wheel carries them inside the package under ``_ansible/``; a source
checkout (an editable install) keeps them at the top of the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oneclick.errors import AssetsNotFoundError
from oneclick.i18n import _

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Assets:
    """Paths of the Ansible content shipped with oneclick."""

    root: Path

    @property
    def playbooks(self) -> Path:
        return self.root / "playbooks"

    @property
    def roles(self) -> Path:
        return self.root / "roles"

    @property
    def local_inventory(self) -> Path:
        return self.root / "inventories" / "local" / "hosts.yml"

    def playbook(self, name: str) -> Path:
        return self.playbooks / f"{name}.yml"


def find_assets() -> Assets:
    """Return the shipped Ansible content, packaged copy first."""
    for root in (_PACKAGE_DIR / "_ansible", _PACKAGE_DIR.parent):
        if (root / "playbooks" / "site.yml").is_file() and (root / "roles").is_dir():
            return Assets(root)
    raise AssetsNotFoundError(
        _("the playbooks and roles are missing from {path}; reinstall oneclick").format(
            path=_PACKAGE_DIR
        )
    )
