"""The payments services, one module and singleton per aggregate."""
