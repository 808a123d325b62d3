"""Project storage: image folders, the SQLite store, COCO I/O and mask geometry. No Qt here."""
