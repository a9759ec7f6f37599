"""Logging in and out."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from portal.extensions import db, login_manager
from portal.models import User, normalize_email
from portal.routes import local_address

bp = Blueprint("auth", __name__)


@login_manager.user_loader
def load_user(user_id: str):
    if not user_id.isdigit():
        return None
    return db.session.get(User, int(user_id))


@bp.route("/login", methods=("GET", "POST"))
def login():
    """Show the login form and log a user in."""
    if current_user.is_authenticated:
        return redirect(url_for("index"))
    error = None
    email = ""
    if request.method == "POST":
        email = normalize_email(request.form.get("email", ""))
        password = request.form.get("password", "")
        # The same e-mail may exist in two organizations; the password decides which account it is.
        candidates = db.session.scalars(select(User).where(User.email == email)).all()
        user = next((u for u in candidates if u.check_password(password)), None)
        if user is None:
            error = "Unknown e-mail address or wrong password."
        elif not user.active:
            error = "This account is disabled. Ask your admin."
        else:
            login_user(user)
            return redirect(local_address(request.args.get("next"), url_for("index")))
    status = 400 if error else 200
    return render_template("auth/login.html", error=error, email=email), status


@bp.route("/logout", methods=("POST",))
def logout():
    """Log the current user out."""
    logout_user()
    flash("You have been logged out.")
    return redirect(url_for("auth.login"))
