"""Reading one document of the documents folder (or an attachment of a mail in it): its bytes and content hash,
validated before anything parses them (size limit, type, emptiness, zip/XML bombs)."""

import hashlib

from assets.parsing import DocumentError, check_docx_archive, suffix_of, validate_content
from resources.documents import DocumentSource


# ------------------------------------------------------------------------------------------ raw documents

def read_document(documents: DocumentSource, doc_id: str) -> dict:
    """The document's bytes and hash, validated (size limit, type, emptiness, zip/XML bombs)."""
    try:
        path = documents.path_for(doc_id)
    except ValueError as exc:  # a symlink or key leading out of the folder (the scan skips these; an old partition may not)
        raise DocumentError(doc_id, f"{exc}; skipped") from exc
    attached_to = read_attachment(documents, doc_id) if not path.is_file() else None
    if attached_to:
        path, data = attached_to
        stat = path.stat()
    else:
        if not path.is_file():
            raise DocumentError(doc_id, f"file not found at {path} (deleted? the sensor purges deleted documents)")
        stat = path.stat()
    if stat.st_size > documents.max_bytes:
        raise DocumentError(doc_id, f"too large: {stat.st_size:,} bytes (limit {documents.max_bytes:,}); skipped")
    data = data if attached_to else path.read_bytes()
    suffix = suffix_of(doc_id)
    validate_content(doc_id, suffix, data)
    if suffix == ".docx":
        check_docx_archive(doc_id, data)
    sha256 = hashlib.sha256(data).hexdigest()
    record = {"doc_id": doc_id, "path": str(path), "suffix": suffix, "sha256": sha256, "size": len(data),
              "mtime_ns": stat.st_mtime_ns, "content": data}
    if attached_to:
        record["attached_to"] = doc_id.rsplit("#", 1)[0]  # the mail this attachment came with
    return record


def read_attachment(documents: DocumentSource, doc_id: str) -> tuple | None:
    """(mail path, attachment bytes) for an attachment document '<mail key>#<name>'; None for other keys."""
    found = documents.mail_for(doc_id)
    if not found:
        return None
    try:
        data = documents.attachment_bytes(doc_id)
    except Exception as exc:  # noqa: BLE001
        raise DocumentError(doc_id, f"could not read the attachment from its mail: {type(exc).__name__}: {exc}") from exc
    if data is None:
        raise DocumentError(doc_id, f"the mail {found[0].name!r} no longer has this attachment")
    return found[0], data
